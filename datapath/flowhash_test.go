package datapath

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
)

var ipC = netip.MustParseAddr("192.168.127.12")

// flowSpec describes one frame of a flow for the hash tests.
type flowSpec struct {
	srcMAC, dstMAC header.MAC
	src, dst       netip.Addr // invalid: ARP
	sport, dport   uint16
	tcp, vlan      bool
	flags, frag    uint16 // IPv4 flags and fragment offset
}

func (s flowSpec) build() []byte {
	f := headertest.Frame{Dst: s.dstMAC, Src: s.srcMAC, VLAN: s.vlan, VLANTCI: 5, Payload: make([]byte, 30)}
	switch {
	case !s.src.IsValid():
		f.ARP = &header.ARPFields{Op: header.ARPRequest, SenderMAC: s.srcMAC, SenderIP: ipA, TargetIP: ipB}
		f.Payload = nil
	case s.src.Is4():
		f.IPv4 = &headertest.IPv4Header{ID: 7, Src: s.src, Dst: s.dst, Flags: s.flags, FragOffset: s.frag}
	default:
		f.IPv6 = &headertest.IPv6Header{Src: s.src, Dst: s.dst}
	}
	if s.src.IsValid() {
		if s.tcp {
			f.TCP = &headertest.TCPHeader{SrcPort: s.sport, DstPort: s.dport}
		} else {
			f.UDP = &headertest.UDPHeader{SrcPort: s.sport, DstPort: s.dport}
		}
	}
	return f.Build()
}

// reverse is the other direction of the flow.
func (s flowSpec) reverse() flowSpec {
	s.srcMAC, s.dstMAC = s.dstMAC, s.srcMAC
	s.src, s.dst = s.dst, s.src
	s.sport, s.dport = s.dport, s.sport
	return s
}

func hashOf(b []byte) uint32 { return flowHash([][]byte{b}, 42) }

func TestFlowHashSymmetricAndSplitInvariant(t *testing.T) {
	for _, c := range []struct {
		name string
		s    flowSpec
	}{
		{"udp4", flowSpec{srcMAC: macA, dstMAC: macB, src: ipA, dst: ipB, sport: 1000, dport: 53}},
		{"tcp4", flowSpec{srcMAC: macA, dstMAC: macB, src: ipA, dst: ipB, sport: 40000, dport: 80, tcp: true}},
		{"tcp4-vlan", flowSpec{srcMAC: macA, dstMAC: macB, src: ipA, dst: ipB, sport: 40000, dport: 80, tcp: true, vlan: true}},
		{"udp6", flowSpec{srcMAC: macA, dstMAC: macB, src: ip6A, dst: ip6B, sport: 5, dport: 6}},
		{"tcp6", flowSpec{srcMAC: macA, dstMAC: macB, src: ip6A, dst: ip6B, sport: 5, dport: 6, tcp: true}},
		{"arp", flowSpec{srcMAC: macA, dstMAC: macB}},
		{"fragment", flowSpec{srcMAC: macA, dstMAC: macB, src: ipA, dst: ipB, sport: 1, dport: 2, frag: 1480}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fwd, rev := c.s.build(), c.s.reverse().build()
			h := hashOf(fwd)
			if r := hashOf(rev); r != h {
				t.Errorf("reverse direction hashes %#x, forward %#x", r, h)
			}
			// Any split of the frame's bytes hashes the same.
			for cut := 1; cut < len(fwd); cut++ {
				if g := flowHash([][]byte{fwd[:cut], fwd[cut:]}, 42); g != h {
					t.Fatalf("split at %d hashes %#x, whole %#x", cut, g, h)
				}
			}
			// The seed changes the hash.
			seen := map[uint32]bool{}
			for seed := uint64(0); seed < 8; seed++ {
				seen[flowHash([][]byte{fwd}, seed*0x9e3779b97f4a7c15)] = true
			}
			if len(seen) < 7 {
				t.Errorf("8 seeds give %d hashes", len(seen))
			}
		})
	}
}

// TestFlowHashTuple checks what is and is not part of a flow: ports count
// for TCP and UDP but not for IPv4 fragments (every fragment of a datagram
// hashes like its first), MACs do not count for IP.
func TestFlowHashTuple(t *testing.T) {
	base := flowSpec{srcMAC: macA, dstMAC: macB, src: ipA, dst: ipB, sport: 1000, dport: 2000}
	h := hashOf(base.build())
	differ := map[string]flowSpec{}
	same := map[string]flowSpec{}
	s := base
	s.sport = 1001
	differ["source port"] = s
	s = base
	s.dport = 2001
	differ["destination port"] = s
	s = base
	s.dst = ipC
	differ["destination address"] = s
	s = base
	s.tcp = true
	differ["protocol"] = s
	s = base
	s.srcMAC = macC
	same["source MAC"] = s
	s = base
	s.vlan = true
	same["VLAN tag"] = s
	for name, s := range differ {
		if hashOf(s.build()) == h {
			t.Errorf("%s: not part of the flow hash", name)
		}
	}
	for name, s := range same {
		if hashOf(s.build()) != h {
			t.Errorf("%s: changes the flow hash", name)
		}
	}
	// Fragments: the first (MF) and a later one (offset) hash alike,
	// whatever the bytes where the ports would be.
	first := base
	first.flags = header.IPv4FlagMF
	later := base
	later.frag, later.sport, later.dport = 1480, 7, 9
	if hashOf(first.build()) != hashOf(later.build()) {
		t.Errorf("fragments of one datagram hash apart")
	}
}

// TestFlowHashSpreads: many flows between two hosts spread over two pairs
// about evenly (the multiply-shift pick of pairFor).
func TestFlowHashSpreads(t *testing.T) {
	var n [2]int
	const flows = 4096
	for i := 0; i < flows; i++ {
		s := flowSpec{srcMAC: macA, dstMAC: macB, src: ipA, dst: ipB, sport: uint16(10000 + i), dport: 9}
		n[(uint64(hashOf(s.build()))*2)>>32]++
	}
	if n[0] < flows*4/10 || n[1] < flows*4/10 {
		t.Errorf("flows per pair %v", n)
	}
}

func TestFlowHashShortAndOdd(t *testing.T) {
	full := flowSpec{srcMAC: macA, dstMAC: macB, src: ipA, dst: ipB, sport: 1, dport: 2, tcp: true}.build()
	for n := 0; n <= len(full); n++ {
		_ = hashOf(full[:n]) // must not panic
	}
	_ = flowHash(nil, 1)
	_ = flowHash([][]byte{{}, {}, full[:3]}, 1)
}

func TestFlowHashDoesNotAllocate(t *testing.T) {
	b := flowSpec{srcMAC: macA, dstMAC: macB, src: ip6A, dst: ip6B, sport: 1, dport: 2}.build()
	segs := [][]byte{b[:20], b[20:]}
	if n := testing.AllocsPerRun(100, func() { _ = flowHash(segs, 1) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// FuzzFlowHash: any bytes hash without panicking, split anywhere hash the
// same, and swapping the MAC addresses (what the loopback uplink does)
// never moves a frame to another pair.
func FuzzFlowHash(f *testing.F) {
	f.Add(flowSpec{srcMAC: macA, dstMAC: macB, src: ipA, dst: ipB, sport: 1, dport: 2}.build(), 10)
	f.Add(flowSpec{srcMAC: macA, dstMAC: macB, src: ip6A, dst: ip6B, sport: 1, dport: 2, tcp: true}.build(), 50)
	f.Add(flowSpec{srcMAC: macA, dstMAC: macB, vlan: true}.build(), 3)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		h := flowHash([][]byte{b}, 9)
		if cut >= 0 && cut <= len(b) {
			if g := flowHash([][]byte{b[:cut], b[cut:]}, 9); g != h {
				t.Fatalf("split at %d: %#x, whole %#x", cut, g, h)
			}
		}
		if len(b) >= 12 {
			s := append([]byte(nil), b...)
			copy(s[0:6], b[6:12])
			copy(s[6:12], b[0:6])
			if g := flowHash([][]byte{s}, 9); g != h {
				t.Fatalf("MACs swapped: %#x, before %#x", g, h)
			}
		}
	})
}

// BenchmarkFlowHash is the cost of one frame's flow hash (steer.go hashes
// each frame once on transmit with more than one queue pair, and once on
// receive) and of a receive steering decision (hash and table lookup):
//
//	go test -run '^$' -bench 'FlowHash|SteerDecision' -benchtime 20000000x -count 5 ./datapath/
func BenchmarkFlowHash(b *testing.B) {
	for _, c := range []struct {
		name string
		s    flowSpec
	}{
		{"udp4", flowSpec{srcMAC: macA, dstMAC: macB, src: ipA, dst: ipB, sport: 1000, dport: 53}},
		{"tcp6", flowSpec{srcMAC: macA, dstMAC: macB, src: ip6A, dst: ip6B, sport: 5, dport: 6, tcp: true}},
		{"arp", flowSpec{srcMAC: macA, dstMAC: macB}},
	} {
		segs := [][]byte{c.s.build()}
		b.Run(c.name, func(b *testing.B) {
			defer cpuPerOp(b)()
			var h uint32
			for i := 0; i < b.N; i++ {
				h += flowHash(segs, uint64(i))
			}
			sinkHash = h
		})
	}
}

var sinkHash uint32

func BenchmarkSteerDecision(b *testing.B) {
	s := &steering{seed: 3}
	frames := make([]Frame, 256)
	for i := range frames {
		frames[i] = frameOf(seqFrame(i, 0))
		if i%2 == 0 {
			s.learn(uint16(i/2%2), frames[i:i+1]) // half the flows learned
		}
	}
	rp := runningPairs{n: 2, mask: 3, list: [MaxQueuePairs]uint8{0, 1}}
	b.ResetTimer()
	defer cpuPerOp(b)()
	var sum uint32
	for i := 0; i < b.N; i++ {
		sum += uint32(s.pairFor(&frames[i&255], &rp))
	}
	sinkHash = sum
}

// cpuPerOp reports the process's CPU time per operation ("cpu-ns/op")
// from the call to the call of the function it returns: on a loaded
// machine wall-clock ns/op counts the time other processes had the core.
func cpuPerOp(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() { b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op") }
}
