package datapath

import (
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/internal/testclock"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// swRig is a switch with capturing ports.
type swRig struct {
	t     *testing.T
	sw    *Switch
	clock *testclock.Clock
	ports map[string]*capPort
	sps   map[string]*SwitchPort
}

func newSwRig(t *testing.T, opt SwitchOptions) *swRig {
	t.Helper()
	c := testclock.New(time.Unix(1_700_000_000, 0))
	if opt.Now == nil {
		opt.Now = c.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	sw, err := NewSwitch(opt)
	require.NoError(t, err)
	return &swRig{t: t, sw: sw, clock: c, ports: map[string]*capPort{}, sps: map[string]*SwitchPort{}}
}

func (r *swRig) attach(name string, opt PortOptions) *capPort {
	r.t.Helper()
	p := newCapPort(name)
	sp, err := r.sw.Attach(p, opt)
	require.NoError(r.t, err)
	r.ports[name], r.sps[name] = p, sp
	return p
}

// send makes port name send frames (one batch).
func (r *swRig) send(name string, frames ...[]byte) {
	fs := make([]Frame, len(frames))
	for i, f := range frames {
		fs[i] = frameOf(f)
	}
	r.sps[name].Send(fs)
}

// got returns how many frames each port received since the last reset, and
// resets.
func (r *swRig) got() map[string]int {
	m := map[string]int{}
	for n, p := range r.ports {
		if c := p.Count(); c > 0 {
			m[n] = c
		}
		p.Reset()
	}
	return m
}

func frameTo(dst, src header.MAC) []byte {
	return ethFrame(dst, src, 0x88b5, make([]byte, 46))
}

func TestSwitchLearnsAndFloods(t *testing.T) {
	r := newSwRig(t, SwitchOptions{})
	for _, n := range []string{"a", "b", "c"} {
		r.attach(n, PortOptions{AllowSpoofing: true})
	}
	steps := []struct {
		from     string
		dst, src header.MAC
		want     map[string]int
	}{
		{"a", macB, macA, map[string]int{"b": 1, "c": 1}},                // unknown unicast floods
		{"b", macA, macB, map[string]int{"a": 1}},                        // a was learned
		{"a", macB, macA, map[string]int{"b": 1}},                        // b was learned
		{"c", header.BroadcastMAC, macC, map[string]int{"a": 1, "b": 1}}, // broadcast
		{"a", mcast, macA, map[string]int{"b": 1, "c": 1}},               // multicast
		{"b", macC, macB, map[string]int{"c": 1}},
		{"a", macX, macA, map[string]int{"b": 1, "c": 1}}, // never seen
		{"c", macB, macA, map[string]int{"b": 1}},         // a moved to port c
		{"b", macA, macB, map[string]int{"c": 1}},
	}
	for i, s := range steps {
		r.send(s.from, frameTo(s.dst, s.src))
		require.Equal(t, s.want, r.got(), "step %d", i)
	}
	p, ok := r.sw.Lookup(macA)
	require.True(t, ok)
	require.Equal(t, "c", p.Name())
	_, ok = r.sw.Lookup(macX)
	require.False(t, ok)
}

func TestSwitchGroupsBatchByDestination(t *testing.T) {
	r := newSwRig(t, SwitchOptions{})
	for _, n := range []string{"a", "b", "c"} {
		r.attach(n, PortOptions{AllowSpoofing: true})
	}
	r.send("b", frameTo(macA, macB))
	r.send("c", frameTo(macA, macC))
	r.got()
	f1, f2, f3, f4 := frameTo(macB, macA), frameTo(macC, macA), frameTo(macB, macA), frameTo(header.BroadcastMAC, macA)
	f1[20], f2[20], f3[20], f4[20] = 1, 2, 3, 4
	r.send("a", f1, f2, f3, f4)
	require.Equal(t, 1, r.ports["b"].Calls())
	require.Equal(t, 1, r.ports["c"].Calls())
	require.Equal(t, [][]byte{f1, f3, f4}, r.ports["b"].Frames())
	require.Equal(t, [][]byte{f2, f4}, r.ports["c"].Frames())
	require.Zero(t, r.ports["a"].Count())
}

func TestSwitchAgeing(t *testing.T) {
	r := newSwRig(t, SwitchOptions{AgeingTime: 10 * time.Second})
	r.attach("a", PortOptions{AllowSpoofing: true})
	r.attach("b", PortOptions{AllowSpoofing: true})
	r.attach("c", PortOptions{AllowSpoofing: true})
	r.attach("g", PortOptions{AllowSpoofing: true, MAC: macGW})
	r.send("b", frameTo(macA, macB))
	r.got()

	r.clock.Advance(9 * time.Second)
	r.send("a", frameTo(macB, macA))
	require.Equal(t, map[string]int{"b": 1}, r.got(), "within the ageing time")

	// b keeps sending: it stays known past the first ageing time.
	r.clock.Advance(5 * time.Second)
	r.send("b", frameTo(macX, macB))
	r.got()
	r.clock.Advance(8 * time.Second)
	r.send("a", frameTo(macB, macA))
	require.Equal(t, map[string]int{"b": 1}, r.got(), "refreshed entry")

	r.clock.Advance(11 * time.Second)
	r.send("c", frameTo(macB, macC))
	require.Equal(t, map[string]int{"a": 1, "b": 1, "g": 1}, r.got(), "aged out: flooded")

	// A port's own MAC is static: it never ages.
	r.clock.Advance(time.Hour)
	r.send("a", frameTo(macGW, macA))
	require.Equal(t, map[string]int{"g": 1}, r.got())
}

func TestSwitchNoRoute(t *testing.T) {
	r := newSwRig(t, SwitchOptions{})
	a := r.attach("a", PortOptions{AllowSpoofing: true})
	r.send("a", frameTo(header.BroadcastMAC, macA))
	require.EqualValues(t, 1, a.stats.Drops(DropNoRoute), "alone on the switch")
	r.attach("b", PortOptions{AllowSpoofing: true})
	r.send("a", frameTo(macA, macA)) // to itself
	require.EqualValues(t, 2, a.stats.Drops(DropNoRoute))
	require.Empty(t, r.got())
}

func TestSwitchDropsInvalidSources(t *testing.T) {
	r := newSwRig(t, SwitchOptions{})
	a := r.attach("a", PortOptions{AllowSpoofing: true})
	r.attach("b", PortOptions{})
	r.send("a", frameTo(macB, mcast), frameTo(macB, header.MAC{}), []byte{1, 2, 3})
	r.send("b", frameTo(macA, header.BroadcastMAC))
	require.EqualValues(t, 3, a.stats.Drops(DropMalformed))
	require.EqualValues(t, 1, r.ports["b"].stats.Drops(DropMalformed))
	require.Empty(t, r.got())
	_, ok := r.sps["b"].MAC()
	require.False(t, ok, "a group address is never a port's own MAC")
}

// TestSwitchDeliversCheckedCopy checks that receivers get the frame's
// first bytes from the switch's private copy, not from the sender's
// buffer, and the rest in place.
func TestSwitchDeliversCheckedCopy(t *testing.T) {
	r := newSwRig(t, SwitchOptions{})
	r.attach("a", PortOptions{})
	b := r.attach("b", PortOptions{})
	big := udp4Frame(macB, macA, ipA, ipB, 1, 2, 1400)
	f := frameOf(big[:30], big[30:])
	f.Hdr = virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum | virtio.NetHdrFDataValid | virtio.NetHdrFRscInfo, CsumStart: 34, CsumOffset: 6, NumBuffers: 9}
	r.sps["a"].Send([]Frame{f})
	require.Equal(t, [][]byte{big}, b.Frames())
	require.NotSame(t, &big[0], b.Records()[0].Head)
	require.Equal(t, virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}, b.Hdrs()[0],
		"checksum metadata carried over, DATA_VALID not")
}

func TestSwitchAntiSpoofing(t *testing.T) {
	leases := newFakeLeases()
	leases.set(macA, ipA)
	udp := func(src header.MAC, sip netip.Addr, dport uint16) []byte {
		return udp4Frame(header.BroadcastMAC, src, sip, netip.IPv4Unspecified(), 68, dport, 300)
	}
	igmp := func(dst netip.Addr) []byte {
		b := udp4Frame(header.BroadcastMAC, macA, netip.IPv4Unspecified(), dst, 0, 0, 8)
		ip := header.IPv4(b[14:])
		ip.SetProtocol(protoIGMP)
		ip.UpdateChecksum()
		return b
	}
	qinq := ethFrame(header.BroadcastMAC, macA, header.EtherTypeVLAN, append([]byte{0, 1, 0x81, 0}, udp(macA, ipB, 53)[12:]...))
	badIP := ethFrame(header.BroadcastMAC, macA, header.EtherTypeIPv4, append([]byte{0x45}, make([]byte, 18)...)) // 19 bytes
	tests := []struct {
		name  string
		frame []byte
		want  verdict
	}{
		{"own MAC and leased IP", udp(macA, ipA, 53), pass},
		{"another MAC", udp(macX, ipA, 53), spoofed},
		{"another IP", udp(macA, ipB, 53), spoofed},
		{"broadcast source IP", udp(macA, netip.MustParseAddr("255.255.255.255"), 53), spoofed},
		{"0.0.0.0 to DHCP", udp(macA, netip.IPv4Unspecified(), 67), pass},
		{"0.0.0.0 to DNS", udp(macA, netip.IPv4Unspecified(), 53), spoofed},
		{"0.0.0.0 IGMP report", igmp(netip.MustParseAddr("224.0.0.22")), pass},
		{"0.0.0.0 IGMP unicast", igmp(ipGW), spoofed},
		{"ARP from leased IP", arpFrame(macA, macA, ipA, ipGW), pass},
		{"ARP probe", arpFrame(macA, macA, netip.IPv4Unspecified(), ipA), pass},
		{"ARP from another IP", arpFrame(macA, macA, ipB, ipGW), spoofed},
		{"ARP with another sender MAC", arpFrame(macA, macX, ipA, ipGW), spoofed},
		{"ARP truncated", ethFrame(header.BroadcastMAC, macA, header.EtherTypeARP, make([]byte, 20)), malformed},
		{"IPv4 header truncated", badIP, malformed},
		{"stacked VLAN tags", qinq, spoofed},
		{"IPv6 checks the MAC only", ethFrame(header.BroadcastMAC, macA, header.EtherTypeIPv6, make([]byte, 60)), pass},
		{"IPv6 from another MAC", ethFrame(header.BroadcastMAC, macX, header.EtherTypeIPv6, make([]byte, 60)), spoofed},
		{"other EtherType", frameTo(header.BroadcastMAC, macA), pass},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newSwRig(t, SwitchOptions{Leases: leases})
			a := r.attach("a", PortOptions{})
			r.attach("b", PortOptions{})
			r.send("a", frameTo(macB, macA)) // a's MAC from its first frame
			r.got()
			r.send("a", tc.frame)
			got := r.got()
			switch tc.want {
			case pass:
				require.Equal(t, map[string]int{"b": 1}, got)
				require.Zero(t, a.stats.Drops(DropSpoof))
			case spoofed:
				require.Empty(t, got)
				require.EqualValues(t, 1, a.stats.Drops(DropSpoof))
			case malformed:
				require.Empty(t, got)
				require.EqualValues(t, 1, a.stats.Drops(DropMalformed))
			}
		})
	}
}

func TestSwitchAntiSpoofingOwnership(t *testing.T) {
	leases := newFakeLeases()
	r := newSwRig(t, SwitchOptions{Leases: leases})
	g := r.attach("gw", PortOptions{MAC: macGW, AllowSpoofing: true})
	a := r.attach("a", PortOptions{})
	b := r.attach("b", PortOptions{MAC: macB})
	router := r.attach("router", PortOptions{AllowSpoofing: true})

	_, err := r.sw.Attach(newCapPort("dup"), PortOptions{MAC: macGW})
	require.Error(t, err, "a MAC has one owner")
	_, err = r.sw.Attach(newCapPort("group"), PortOptions{MAC: mcast})
	require.Error(t, err)

	// a's first frame claims the gateway's MAC: refused, and a has no MAC
	// yet; its next frame, from its own MAC, claims that.
	r.send("a", udp4Frame(macB, macGW, ipGW, ipB, 1, 2, 10))
	require.EqualValues(t, 1, a.stats.Drops(DropSpoof))
	r.send("a", udp4Frame(macB, macA, netip.IPv4Unspecified(), ipGW, 68, 67, 10))
	require.Equal(t, map[string]int{"b": 1}, r.got())
	own, ok := r.sps["a"].MAC()
	require.True(t, ok)
	require.Equal(t, macA, own)
	_, ok = r.sps["router"].MAC()
	require.False(t, ok)

	// No lease yet: a's own MAC with any address is refused.
	r.send("a", udp4Frame(macB, macA, ipA, ipB, 1, 2, 10))
	require.EqualValues(t, 2, a.stats.Drops(DropSpoof))
	// The lease arrives (generation moves): accepted; moved: refused.
	leases.set(macA, ipA)
	r.send("a", udp4Frame(macB, macA, ipA, ipB, 1, 2, 10))
	require.Equal(t, map[string]int{"b": 1}, r.got())
	leases.set(macA, ipB)
	r.send("a", udp4Frame(macB, macA, ipA, ipB, 1, 2, 10))
	require.EqualValues(t, 3, a.stats.Drops(DropSpoof))
	require.Empty(t, r.got())

	// A port that may spoof sends from any MAC but the owned ones, and
	// the switch learns them.
	r.send("router", frameTo(macB, macX), frameTo(macB, macC))
	require.Equal(t, map[string]int{"b": 2}, r.got())
	r.send("router", frameTo(macB, macA), frameTo(macB, macGW), frameTo(macA, macB))
	require.EqualValues(t, 3, router.stats.Drops(DropSpoof))
	require.Empty(t, r.got())
	p, ok := r.sw.Lookup(macX)
	require.True(t, ok)
	require.Equal(t, "router", p.Name())
	p, ok = r.sw.Lookup(macA)
	require.True(t, ok)
	require.Equal(t, "a", p.Name())

	// b's configured MAC: a frame from another MAC is spoofed from the
	// start.
	r.send("b", frameTo(macA, macC))
	require.EqualValues(t, 1, b.stats.Drops(DropSpoof))
	require.Zero(t, g.stats.Drops(DropSpoof))
}

func TestSwitchLeaseLookupsAreCached(t *testing.T) {
	leases := newFakeLeases()
	leases.set(macA, ipA)
	r := newSwRig(t, SwitchOptions{Leases: leases})
	r.attach("a", PortOptions{MAC: macA})
	r.attach("b", PortOptions{})
	f := udp4Frame(macB, macA, ipA, ipB, 1, 2, 10)
	for i := 0; i < 10; i++ {
		r.send("a", f, f, f)
	}
	require.Equal(t, 30, r.ports["b"].Count())
	require.EqualValues(t, 1, leases.n.Load(), "one lease lookup for 30 frames")
}

// TestSwitchLeaseRecheck: a lease bound without moving the generation
// (a lease table may renew an expired lease so) is seen within a second,
// and a spoofing guest makes at most one lookup per second.
func TestSwitchLeaseRecheck(t *testing.T) {
	leases := newFakeLeases()
	r := newSwRig(t, SwitchOptions{Leases: leases})
	a := r.attach("a", PortOptions{MAC: macA})
	r.attach("b", PortOptions{})
	f := udp4Frame(macB, macA, ipA, ipB, 1, 2, 10)
	r.send("a", f)
	require.EqualValues(t, 1, a.stats.Drops(DropSpoof))
	leases.setQuiet(macA, ipA)
	for i := 0; i < 10; i++ {
		r.clock.Advance(50 * time.Millisecond)
		r.send("a", f, f)
	}
	require.EqualValues(t, 21, a.stats.Drops(DropSpoof))
	require.EqualValues(t, 1, leases.n.Load(), "cached for a second")
	r.clock.Advance(600 * time.Millisecond)
	r.send("a", f)
	require.EqualValues(t, 2, leases.n.Load())
	require.Equal(t, map[string]int{"b": 1}, r.got())
}

func TestSwitchDetach(t *testing.T) {
	r := newSwRig(t, SwitchOptions{})
	a := r.attach("a", PortOptions{AllowSpoofing: true})
	r.attach("b", PortOptions{MAC: macB})
	r.attach("c", PortOptions{AllowSpoofing: true})
	r.send("a", frameTo(macB, macA))
	r.got()
	spA := r.sps["a"]
	require.Len(t, r.sw.scratches, 1)
	r.sw.Detach(spA)
	r.sw.Detach(spA) // idempotent
	require.Empty(t, r.sw.scratches, "a detached port's scratch is not kept")
	require.Len(t, r.sw.Ports(), 2)
	_, ok := r.sw.Lookup(macA)
	require.False(t, ok, "the detached port's addresses are forgotten")
	r.send("b", frameTo(macA, macB))
	require.Equal(t, map[string]int{"c": 1}, r.got(), "flooded, not sent to the detached port")
	r.send("a", frameTo(macB, macA))
	require.EqualValues(t, 1, a.stats.Drops(DropNoRoute))
	require.Empty(t, r.got())

	// The slot is reused, and b's MAC, now free after b leaves, can be
	// configured again.
	r.sw.Detach(r.sps["b"])
	d := r.attach("d", PortOptions{MAC: macB})
	require.Equal(t, 0, r.sps["d"].idx)
	r.send("c", frameTo(macB, macC))
	require.Equal(t, 1, d.Count())
}

// TestSwitchSegmentsPerReceiver floods a GSO frame: segmented for each
// port without the offload, whole for the others; one that cannot be
// segmented is counted once.
func TestSwitchSegmentsPerReceiver(t *testing.T) {
	sw := newTestSwitch(t, nil)
	src := newCapPort("src")
	spS, err := sw.Attach(src, PortOptions{AllowSpoofing: true})
	require.NoError(t, err)
	plain1, plain2, tso := newCapPort("p1"), newCapPort("p2"), newCapPort("tso")
	for _, p := range []Port{offlPort{plain1, RxOffloads{}}, offlPort{plain2, RxOffloads{Csum: true}}, offlPort{tso, RxOffloads{Csum: true, TSO4: true}}} {
		_, err := sw.Attach(p, PortOptions{})
		require.NoError(t, err)
	}
	g, gh := tcpGSOFrame(gsoSpec{payload: 4000, mss: 1000, flags: header.TCPFlagACK}, macA, header.BroadcastMAC)
	f := frameOf(g)
	f.Hdr = gh
	bad := f
	bad.Hdr.GSOType = virtio.NetHdrGSOTCPv6 // does not match the headers
	spS.Send([]Frame{f, bad})
	checkTCPSegments(t, g, gh, plain1.Frames(), plain1.Hdrs(), false)
	checkTCPSegments(t, g, gh, plain2.Frames(), plain2.Hdrs(), true)
	require.Equal(t, [][]byte{g}, tso.Frames())
	require.EqualValues(t, 1, src.stats.Drops(DropMalformed))
}

// TestSwitchSetsPeer checks that Attach and Detach set the peer of a port
// that has one.
func TestSwitchSetsPeer(t *testing.T) {
	sw, err := NewSwitch(SwitchOptions{})
	require.NoError(t, err)
	gp, err := NewGuestPort(GuestPortOptions{Name: "g", QueuePairs: 1})
	require.NoError(t, err)
	sp, err := sw.Attach(gp, PortOptions{})
	require.NoError(t, err)
	require.Equal(t, Port(sp), *gp.peer.Load())
	require.Equal(t, "g", sp.Name())
	require.Same(t, gp.Stats(), sp.Stats())
	require.Equal(t, Port(gp), sp.Port())
	sw.Detach(sp)
	require.Nil(t, gp.peer.Load())
}

func TestNewSwitchOptions(t *testing.T) {
	_, err := NewSwitch(SwitchOptions{AgeingTime: -1})
	require.Error(t, err)
	_, err = NewSwitch(SwitchOptions{MACTableSize: 1 << 21})
	require.Error(t, err)
	sw, err := NewSwitch(SwitchOptions{MACTableSize: 1})
	require.NoError(t, err)
	require.Len(t, sw.macs.keys, 64, "at least 8 buckets")
}

// TestMACTableFull checks that a bucket full of live entries evicts its
// least recently seen dynamic entry, never a static one.
func TestMACTableFull(t *testing.T) {
	tb := newMACTable(64, int64(time.Minute))
	none := func(uint64) bool { return false }
	// Find 10 MACs of one bucket.
	var same []uint64
	b0 := tb.bucket(1)
	for m := uint64(1); len(same) < 10; m++ {
		if tb.bucket(m<<1) == b0 { // individual addresses only
			same = append(same, m<<1)
		}
	}
	require.True(t, tb.setStatic(same[0], 7))
	for i, m := range same[1:8] {
		require.Equal(t, learned, tb.learn(m, 1, int64(i+1), none))
	}
	require.Equal(t, learned, tb.learn(same[8], 2, 100, none))
	_, ok := tb.lookup(same[1], 100)
	require.False(t, ok, "oldest dynamic entry evicted")
	idx, ok := tb.lookup(same[0], 100)
	require.True(t, ok)
	require.Equal(t, 7, idx)
	require.Equal(t, learnRefuse, tb.learn(same[0], 2, 100, none))
	n := 0
	tb.entries(100, func(uint64, int, bool) { n++ })
	require.Equal(t, 8, n)
	for _, m := range same[1:8] {
		require.True(t, tb.setStatic(m, 3))
	}
	require.False(t, tb.setStatic(same[8], 3), "a bucket of static entries is full")
	require.Equal(t, learnedNot, tb.learn(same[9], 1, 200, none))
	for _, m := range same[:8] {
		_, ok := tb.lookup(m, 200)
		require.True(t, ok)
	}
}

// TestSwitchConcurrentSenders runs every port's batches from several
// goroutines at once, on the same and on different queues (for -race).
func TestSwitchConcurrentSenders(t *testing.T) {
	r := newSwRig(t, SwitchOptions{Now: time.Now})
	macs := []header.MAC{macA, macB, macC, macX}
	names := []string{"a", "b", "c", "x"}
	for i, n := range names {
		r.attach(n, PortOptions{MAC: macs[i]})
	}
	var wg sync.WaitGroup
	const rounds = 200
	for i := range names {
		for q := 0; q < 3; q++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fs := make([]Frame, 8)
				for k := range fs {
					dst := macs[(i+1+k)%len(macs)]
					if k == 7 {
						dst = header.BroadcastMAC
					}
					fs[k] = frameOf(frameTo(dst, macs[i]))
					fs[k].Queue = uint16(q % 2)
				}
				for range rounds {
					r.sps[names[i]].Send(fs)
				}
			}()
		}
	}
	// Attach and detach a port meanwhile.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; k < 20; k++ {
			sp, err := r.sw.Attach(newCapPort(fmt.Sprint("t", k)), PortOptions{AllowSpoofing: true})
			if err == nil {
				r.sw.Detach(sp)
			}
		}
	}()
	wg.Wait()
	total := 0
	for _, n := range names {
		total += r.ports[n].Count()
		require.Zero(t, r.ports[n].stats.Drops(DropSpoof))
	}
	// Each batch of 8: 6 unicast (to the 3 others) + 1 to itself
	// (dropped) + 1 broadcast to 3 ports.
	require.Equal(t, len(names)*3*rounds*(6+3), total)
}

// TestSwitchForwardDoesNotAllocate guards the forward path: unicast,
// flood, anti-spoofing with leases, and software segmentation.
func TestSwitchForwardDoesNotAllocate(t *testing.T) {
	leases := newFakeLeases()
	leases.set(macA, ipA)
	r := newSwRig(t, SwitchOptions{Leases: leases})
	sw := r.sw
	a := &countPort{name: "a"}
	spA, err := sw.Attach(a, PortOptions{MAC: macA})
	require.NoError(t, err)
	b := &countPort{name: "b"}
	_, err = sw.Attach(b, PortOptions{MAC: macB})
	require.NoError(t, err)
	ca := &countPort{name: "c"}
	_, err = sw.Attach(offlPort2{ca}, PortOptions{MAC: macC, AllowSpoofing: true})
	require.NoError(t, err)
	uni := udp4Frame(macB, macA, ipA, ipB, 1, 2, 1400)
	bcast := udp4Frame(header.BroadcastMAC, macA, ipA, ipB, 1, 2, 18)
	gso, gh := tcpGSOFrame(gsoSpec{payload: 20000, mss: 1448, flags: header.TCPFlagACK}, macA, macC)
	frames := make([]Frame, 32)
	for i := range frames {
		switch {
		case i%8 == 7:
			frames[i] = frameOf(bcast)
		default:
			frames[i] = frameOf(uni[:40], uni[40:])
		}
	}
	gsoFrames := []Frame{frameOf(gso[:100], gso[100:])}
	gsoFrames[0].Hdr = gh
	// A port that may spoof: its sources are learned.
	loose := &countPort{name: "loose"}
	spL, err := sw.Attach(loose, PortOptions{AllowSpoofing: true})
	require.NoError(t, err)
	looseFrames := []Frame{frameOf(frameTo(macB, macX)), frameOf(frameTo(macA, header.MAC{2, 0, 0, 0, 0, 0x77}))}
	run := func() {
		spA.Send(frames)
		spA.Send(gsoFrames)
		spL.Send(looseFrames)
	}
	run()
	require.Zero(t, testing.AllocsPerRun(100, run))
	require.Zero(t, a.stats.Drops(DropSpoof)+a.stats.Drops(DropMalformed))
	// 102 runs: one before, AllocsPerRun's warm-up and 100.
	require.EqualValues(t, 102*(28+4+1), b.n.Load())
	require.EqualValues(t, 102, a.n.Load())
	require.Zero(t, loose.stats.Drops(DropSpoof))
	require.EqualValues(t, 102*(4+14), ca.n.Load(), "4 broadcasts and 14 segments per run")
}

// offlPort2 is a countPort that takes no offloads.
type offlPort2 struct{ *countPort }

func (offlPort2) RxOffloads() RxOffloads { return RxOffloads{} }

func FuzzSwitch(f *testing.F) {
	f.Add(udp4Frame(macB, macA, ipA, ipB, 1, 2, 10), uint8(0), uint16(0), uint8(0), uint8(7))
	f.Add(arpFrame(macA, macA, ipA, ipGW), uint8(0), uint16(0), uint8(0), uint8(3))
	g, gh := tcpGSOFrame(gsoSpec{payload: 300, mss: 100, flags: header.TCPFlagACK}, macA, macB)
	f.Add(g, gh.GSOType, gh.GSOSize, gh.Flags, uint8(60))
	u, uh := udpGSOFrame(gsoSpec{payload: 300, mss: 96}, macA, header.BroadcastMAC)
	f.Add(u, uh.GSOType, uh.GSOSize, uh.Flags, uint8(1))
	leases := newFakeLeases()
	leases.set(macA, ipA)
	f.Fuzz(func(t *testing.T, b []byte, gsoType uint8, gsoSize uint16, flags uint8, cut uint8) {
		sw, err := NewSwitch(SwitchOptions{Leases: leases, MACTableSize: 64})
		if err != nil {
			t.Fatal(err)
		}
		strict := newCapPort("strict")
		spS, _ := sw.Attach(strict, PortOptions{})
		loose := newCapPort("loose")
		spL, _ := sw.Attach(loose, PortOptions{AllowSpoofing: true})
		plain := newCapPort("plain")
		_, _ = sw.Attach(offlPort{plain, RxOffloads{}}, PortOptions{MAC: macB})
		full := newCapPort("full")
		_, _ = sw.Attach(offlPort{full, RxOffloads{Csum: true, TSO4: true, TSO6: true, UFO: true, ECN: true}}, PortOptions{MAC: macC})
		c := int(cut) % (len(b) + 1)
		fr := frameOf(b[:c], b[c:])
		fr.Hdr = virtio.NetHdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize, CsumStart: uint16(cut), CsumOffset: 6}
		orig := append([]byte{}, b...)
		spS.Send([]Frame{fr, fr})
		spL.Send([]Frame{fr})
		if string(orig) != string(b) {
			t.Fatal("the switch wrote into the sender's frame")
		}
		for _, h := range plain.Hdrs() {
			if h.GSOType != virtio.NetHdrGSONone {
				t.Fatal("a GSO frame reached a port without GSO")
			}
		}
	})
}
