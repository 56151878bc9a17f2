//go:build linux

package uplink

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// guest is the Go vhost-user frontend playing a guest on vhost-arcnet: one
// queue pair, an address from DHCP, frames crafted by hand.
type guest struct {
	t     testing.TB
	f     *vhostusertest.Frontend
	mac   header.MAC
	ip    netip.Addr
	gwMAC header.MAC
	ipID  uint16
	// timeout bounds every wait for an answer (recvUntil).
	timeout time.Duration
}

var guestMAC = header.MAC{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// newGuest connects a frontend with the given options and features (0:
// everything offered) to b and gets an address by DHCP, sending hostname
// (option 12) if not empty.
func newGuest(t testing.TB, b *arcnet, opts vhostusertest.Options, features uint64, hostname string) *guest {
	t.Helper()
	return newGuestQ(t, b, opts, features, hostname, 256)
}

// newGuestQ is newGuest with queues of qsize entries.
func newGuestQ(t testing.TB, b *arcnet, opts vhostusertest.Options, features uint64, hostname string, qsize uint16) *guest {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	f := vhostusertest.New(t, opts)
	if err := f.Dial(b.sock); err != nil {
		t.Fatal(err)
	}
	if err := f.Negotiate(features); err != nil {
		t.Fatal(err)
	}
	if err := f.SetupQueues(1, qsize); err != nil {
		t.Fatal(err)
	}
	g := &guest{t: t, f: f, mac: guestMAC, gwMAC: b.gatewayMAC(), timeout: 10 * time.Second}
	g.dhcp(hostname)
	return g
}

// dhcp runs DISCOVER, OFFER, REQUEST, ACK.
func (g *guest) dhcp(hostname string) {
	t := g.t
	t.Helper()
	var mods []dhcpv4.Modifier
	if hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(hostname)))
	}
	disc, err := dhcpv4.NewDiscovery(net.HardwareAddr(g.mac[:]), mods...)
	if err != nil {
		t.Fatal(err)
	}
	bcast := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	any4 := netip.IPv4Unspecified()
	exchange := func(m *dhcpv4.DHCPv4, want dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		t.Helper()
		g.send(g.ipv4(header.BroadcastMAC, any4, bcast, header.ProtoUDP, 64,
			udp(netip.AddrPortFrom(any4, 68), netip.AddrPortFrom(bcast, 67), m.ToBytes())))
		var reply *dhcpv4.DHCPv4
		g.recvUntil(func(_ virtio.NetHdr, fr []byte) bool {
			ip, l4, ok := ipv4Of(fr, header.ProtoUDP)
			if !ok || header.UDP(l4).DstPort() != 68 || ip.Src() != gatewayIP {
				return false
			}
			r, err := dhcpv4.FromBytes(header.UDP(l4).Payload())
			if err != nil || r.TransactionID != m.TransactionID || r.MessageType() != want {
				return false
			}
			reply = r
			return true
		}, "DHCP "+want.String())
		return reply
	}
	offer := exchange(disc, dhcpv4.MessageTypeOffer)
	req, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		t.Fatal(err)
	}
	ack := exchange(req, dhcpv4.MessageTypeAck)
	a, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !guestNet.Contains(a) {
		t.Fatalf("DHCP ACK with address %v", ack.YourIPAddr)
	}
	g.ip = a
	t.Logf("guest %v has %v by DHCP (hostname %q)", g.mac, a, hostname)
}

// send transmits one frame with a zero virtio-net header.
func (g *guest) send(frame []byte) {
	g.t.Helper()
	g.sendHdr(virtio.NetHdr{}, frame)
}

func (g *guest) sendHdr(h virtio.NetHdr, frame []byte) {
	g.t.Helper()
	if err := g.f.SendFrame(0, h, frame, vhostusertest.LayoutSplit); err != nil {
		g.t.Fatalf("guest send: %v", err)
	}
}

// txSettled waits until the backend has used every frame the guest
// transmitted (so they are counted), and a little more.
func (g *guest) txSettled() {
	g.t.Helper()
	deadline := time.Now().Add(g.timeout)
	for !g.f.TxDone(0) {
		if time.Now().After(deadline) {
			g.t.Fatalf("guest: transmitted frames not used within %v", g.timeout)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
}

// recv returns the next frame (with its header), answering ARP requests
// for the guest's address on the way; ok is false after timeout.
func (g *guest) recv(timeout time.Duration) (virtio.NetHdr, []byte, bool) {
	deadline := time.Now().Add(timeout)
	for {
		h, fr, ok := g.f.RecvHdr()
		if !ok {
			if time.Now().After(deadline) {
				return h, nil, false
			}
			// Poll: WaitCall would sleep up to the frontend's Timeout,
			// past a short deadline.
			g.f.Calls(0)
			time.Sleep(min(time.Until(deadline), 200*time.Microsecond))
			continue
		}
		if g.answerARP(fr) {
			continue
		}
		return h, fr, true
	}
}

// recvUntil receives until match accepts a frame; other frames are
// dropped. It fails the test after the guest's timeout.
func (g *guest) recvUntil(match func(virtio.NetHdr, []byte) bool, what string) {
	g.t.Helper()
	deadline := time.Now().Add(g.timeout)
	for {
		h, fr, ok := g.recv(time.Until(deadline))
		if !ok {
			g.t.Fatalf("guest: no %s within %v", what, g.timeout)
		}
		if match(h, fr) {
			return
		}
	}
}

func (g *guest) answerARP(fr []byte) bool {
	e := header.Ethernet(fr)
	if !e.IsValid() || e.EtherType() != header.EtherTypeARP {
		return false
	}
	a := header.ARP(e.Payload())
	if a.IsValid() && a.Op() == header.ARPRequest && g.ip.IsValid() && a.TargetIP() == g.ip {
		out := make([]byte, header.EthernetMinSize+header.ARPSize)
		header.Ethernet(out).Encode(&header.EthernetFields{Dst: a.SenderMAC(), Src: g.mac, EtherType: header.EtherTypeARP})
		header.ARP(out[header.EthernetMinSize:]).Encode(&header.ARPFields{Op: header.ARPReply,
			SenderMAC: g.mac, SenderIP: g.ip, TargetMAC: a.SenderMAC(), TargetIP: a.SenderIP()})
		g.send(out)
	}
	return true
}

// ipv4 builds an Ethernet + IPv4 frame (DF set) around the L4 bytes.
func (g *guest) ipv4(dst header.MAC, src, dstIP netip.Addr, proto, ttl uint8, l4 []byte) []byte {
	fr := make([]byte, 34+len(l4))
	header.Ethernet(fr).Encode(&header.EthernetFields{Dst: dst, Src: g.mac, EtherType: header.EtherTypeIPv4})
	g.ipID++
	header.IPv4(fr[14:]).Encode(&header.IPv4Fields{TotalLength: uint16(20 + len(l4)), ID: g.ipID,
		Flags: header.IPv4FlagDF, TTL: ttl, Protocol: proto, Src: src, Dst: dstIP})
	copy(fr[34:], l4)
	return fr
}

// out builds a frame from the guest to the gateway's MAC (routed).
func (g *guest) out(dst netip.Addr, proto, ttl uint8, l4 []byte) []byte {
	return g.ipv4(g.gwMAC, g.ip, dst, proto, ttl, l4)
}

// udp builds a UDP datagram with its checksum.
func udp(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	header.UDP(b).Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(b))})
	copy(b[8:], payload)
	c := ^header.Checksum(b, header.PseudoHeaderChecksum(header.ProtoUDP, src.Addr(), dst.Addr(), uint16(len(b))))
	if c == 0 {
		c = 0xffff
	}
	header.UDP(b).SetChecksum(c)
	return b
}

// icmpEcho builds an ICMP echo request.
func icmpEcho(id, seq uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	header.ICMPv4(b).Encode(&header.ICMPv4Fields{Type: header.ICMPv4Echo, Rest: uint32(id)<<16 | uint32(seq)}, payload)
	return b
}

// ipv4Of returns the IPv4 header and L4 bytes of an Ethernet frame
// carrying protocol proto (any if 0), checking the IPv4 header checksum.
func ipv4Of(fr []byte, proto uint8) (header.IPv4, []byte, bool) {
	e := header.Ethernet(fr)
	if !e.IsValid() || e.EtherType() != header.EtherTypeIPv4 {
		return nil, nil, false
	}
	ip := header.IPv4(e.Payload())
	if !ip.IsValid() || (proto != 0 && ip.Protocol() != proto) {
		return nil, nil, false
	}
	if header.Checksum(ip[:ip.HeaderLen()], 0) != 0xffff {
		return nil, nil, false
	}
	end := min(int(ip.TotalLength()), len(ip))
	return ip, ip[ip.HeaderLen():end], true
}

// l4ChecksumOK verifies a TCP or UDP checksum over ip's payload.
func l4ChecksumOK(ip header.IPv4, l4 []byte) bool {
	return header.Checksum(l4, header.PseudoHeaderChecksum(ip.Protocol(), ip.Src(), ip.Dst(), uint16(len(l4)))) == 0xffff
}

// quoted returns the IPv4 header and first L4 bytes an ICMP error quotes.
func quoted(icmp []byte) (header.IPv4, []byte, error) {
	if len(icmp) < 8+20+8 {
		return nil, nil, fmt.Errorf("ICMP error of %d bytes", len(icmp))
	}
	q := header.IPv4(icmp[8:])
	hl := q.HeaderLen()
	if hl < 20 || len(q) < hl+8 {
		return nil, nil, fmt.Errorf("quoted header too short")
	}
	return q, q[hl:], nil
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
