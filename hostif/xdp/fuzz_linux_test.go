package xdp

import (
	"encoding/binary"
	"testing"

	ht "github.com/arcnet/vhost-arcnet/datapath/header/headertest"
)

// mineOracle is the program's rule written again in Go, from doc.go
// rather than from the C: which frames are vhost-arcnet's.
func mineOracle(b []byte) bool {
	be := binary.BigEndian
	inRange := func(p uint16) bool { return p >= testPortMin && p <= testPortMax }
	nat := natAddr.As4()
	if len(b) < 34 || be.Uint16(b[12:]) != 0x0800 {
		return false
	}
	ip := b[14:]
	ihl := int(ip[0]&0xf) * 4
	if ip[0]>>4 != 4 || ihl < 20 || [4]byte(ip[16:20]) != nat || be.Uint16(ip[6:])&0x3fff != 0 {
		return false
	}
	if ihl > len(ip) {
		return false
	}
	l4 := ip[ihl:]
	switch ip[9] {
	case 6, 17:
		return len(l4) >= 4 && inRange(be.Uint16(l4[2:]))
	case 1:
	default:
		return false
	}
	if len(l4) < 8 {
		return false
	}
	switch l4[0] {
	case 0:
		return inRange(be.Uint16(l4[4:]))
	case 3, 11, 12:
	default:
		return false
	}
	e := l4[8:]
	if len(e) < 20 {
		return false
	}
	eihl := int(e[0]&0xf) * 4
	if e[0]>>4 != 4 || eihl < 20 || [4]byte(e[12:16]) != nat || be.Uint16(e[6:])&0x1fff != 0 || len(e) < eihl+8 {
		return false
	}
	el := e[eihl:]
	switch e[9] {
	case 6, 17:
		return inRange(be.Uint16(el))
	case 1:
		return el[0] == 8 && inRange(be.Uint16(el[4:]))
	}
	return false
}

// FuzzProgram runs the XDP program on arbitrary frames (what a remote host
// can send to the NIC) and checks its verdict against mineOracle: XDP_DROP
// (ours, no socket in the test's XSKMAP) or XDP_PASS, never anything else.
func FuzzProgram(f *testing.F) {
	p := loadTestProgram(f)
	f.Add(in(natAddr, ht.Frame{UDP: &ht.UDPHeader{SrcPort: 53, DstPort: 61500}}))
	f.Add(in(natAddr, ht.Frame{TCP: &ht.TCPHeader{SrcPort: 443, DstPort: 22}}))
	f.Add(in(natAddr, icmpError(3, 3, quoted(natAddr, ht.Frame{ICMP: echo(8, 61004)}))))
	f.Add(in(natAddr, icmpError(11, 0, quoted(natAddr, ht.Frame{TCP: &ht.TCPHeader{SrcPort: 61000, DstPort: 443}}))))
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 {
			return // BPF_PROG_TEST_RUN refuses these
		}
		got, err := p.Run(frame)
		if err != nil {
			t.Fatal(err)
		}
		want := ActionPass
		if mineOracle(frame) {
			want = ActionDrop
		}
		if got != want {
			t.Fatalf("frame % x: got %v, want %v", frame, got, want)
		}
	})
}
