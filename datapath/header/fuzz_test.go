package header

import (
	"testing"
)

// FuzzHeaders feeds arbitrary bytes to every view: IsValid never panics, and
// every accessor of a view that IsValid accepted never panics.
func FuzzHeaders(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2})
	f.Add(make([]byte, 64))
	f.Add([]byte{1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 0x81, 0, 0, 1, 8, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = Checksum(b, 0)
		if e := Ethernet(b); e.IsValid() {
			_, _, _, _, _ = e.Dst(), e.Src(), e.VLANID(), e.EtherType(), e.Payload()
			if e.HeaderLen() > len(b) {
				t.Fatal("header longer than buffer")
			}
		}
		if a := ARP(b); a.IsValid() {
			_, _, _, _, _ = a.Op(), a.SenderMAC(), a.SenderIP(), a.TargetMAC(), a.TargetIP()
		}
		if ip := IPv4(b); ip.IsValid() {
			_, _, _, _, _ = ip.Src(), ip.Dst(), ip.Options(), ip.Payload(), ip.ComputeChecksum()
			_, _, _, _ = ip.IsFragment(), ip.FragmentOffset(), ip.IsChecksumValid(), ip.PseudoHeaderChecksum(6, 0)
			_, _, _, _ = ip.TOS(), ip.TTL(), ip.Protocol(), ip.ID()
			ip.UpdateChecksum()
			if !ip.IsChecksumValid() {
				t.Fatal("checksum not valid after UpdateChecksum")
			}
		}
		if v := IPv6(b); v.IsValid() {
			_, _, _, _, _, _ = v.Src(), v.Dst(), v.Payload(), v.TrafficClass(), v.FlowLabel(), v.HopLimit()
		}
		if th := TCP(b); th.IsValid() {
			_, _, _, _, _, _ = th.SrcPort(), th.DstPort(), th.Seq(), th.Ack(), th.Options(), th.Payload()
			_, _, _ = th.Flags(), th.Window(), th.UrgentPointer()
		}
		if u := UDP(b); u.IsValid() {
			_, _, _, _ = u.SrcPort(), u.DstPort(), u.Length(), u.Payload()
		}
		if ic := ICMPv4(b); ic.IsValid() {
			_, _, _, _, _, _ = ic.Type(), ic.Code(), ic.Ident(), ic.Seq(), ic.Payload(), ic.IsError()
			ic.UpdateChecksum()
			if Checksum(ic, 0) != 0xffff {
				t.Fatal("icmp checksum not valid after UpdateChecksum")
			}
		}
	})
}
