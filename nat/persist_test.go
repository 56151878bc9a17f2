package nat

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/stretchr/testify/require"
)

// persistFlows opens one flow of each kind in e and returns, for each, a
// packet from each side that belongs to it (as they arrive, before
// translation).
func persistFlows(t *testing.T, e *Engine) (guest, uplink []pkt) {
	t.Helper()
	r := ap(remote, 443)
	require.NoError(t, e.AddForward(Forward{Proto: TCP, Port: 2222, Guest: ap(guestB, 22)}))
	require.NoError(t, e.AddForward(Forward{Proto: UDP, Port: 5353, Guest: ap(guestB, 53)}))
	send := func(from Side, p pkt) Packet {
		t.Helper()
		out := one(e, from, p.build(), 0)
		require.NotEqual(t, Drop, out.Verdict, "%v %+v: %v", from, p, out.Reason)
		return out
	}
	// TCP, established, port preserved.
	send(Guest, pkt{proto: TCP, src: ap(guestA, 40000), dst: r, flags: tcpSYN})
	send(Uplink, pkt{proto: TCP, src: r, dst: ap(extAddr, 40000), flags: tcpSYN | tcpACK})
	send(Guest, pkt{proto: TCP, src: ap(guestA, 40000), dst: r, flags: tcpACK})
	guest = append(guest, pkt{proto: TCP, src: ap(guestA, 40000), dst: r, flags: tcpACK, payload: []byte("up")})
	uplink = append(uplink, pkt{proto: TCP, src: r, dst: ap(extAddr, 40000), flags: tcpACK, payload: []byte("down")})
	// TCP, same guest port from another guest: another external port.
	out := send(Guest, pkt{proto: TCP, src: ap(guestB, 40000), dst: r, flags: tcpSYN})
	x := header.TCP(out.Buf[20:]).SrcPort()
	require.NotEqual(t, uint16(40000), x)
	send(Uplink, pkt{proto: TCP, src: r, dst: ap(extAddr, x), flags: tcpSYN | tcpACK})
	guest = append(guest, pkt{proto: TCP, src: ap(guestB, 40000), dst: r, flags: tcpACK, payload: []byte("b")})
	uplink = append(uplink, pkt{proto: TCP, src: r, dst: ap(extAddr, x), flags: tcpACK, payload: []byte("B")})
	// TCP half closed.
	send(Guest, pkt{proto: TCP, src: ap(guestA, 40001), dst: r, flags: tcpSYN})
	send(Uplink, pkt{proto: TCP, src: r, dst: ap(extAddr, 40001), flags: tcpSYN | tcpACK})
	send(Guest, pkt{proto: TCP, src: ap(guestA, 40001), dst: r, flags: tcpACK | tcpFIN})
	uplink = append(uplink, pkt{proto: TCP, src: r, dst: ap(extAddr, 40001), flags: tcpACK, payload: []byte("tail")})
	// UDP with replies (a mapping), and another remote reaching the mapping.
	send(Guest, pkt{proto: UDP, src: ap(guestA, 6000), dst: ap(remote, 53), payload: []byte("q")})
	send(Uplink, pkt{proto: UDP, src: ap(remote, 53), dst: ap(extAddr, 6000), payload: []byte("a")})
	send(Uplink, pkt{proto: UDP, src: ap(remote2, 7), dst: ap(extAddr, 6000), payload: []byte("x")})
	guest = append(guest, pkt{proto: UDP, src: ap(guestA, 6000), dst: ap(remote, 53), payload: []byte("q2")})
	uplink = append(uplink, pkt{proto: UDP, src: ap(remote2, 7), dst: ap(extAddr, 6000), payload: []byte("x2")})
	// ICMP echo.
	send(Guest, pkt{proto: ICMP, src: ap(guestA, 77), dst: ap(remote, 0)})
	uplink = append(uplink, pkt{proto: ICMP, src: ap(remote, 0), dst: ap(extAddr, 77), reply: true})
	// Port forwards (DNAT), TCP and UDP, and a hairpin.
	send(Uplink, pkt{proto: TCP, src: ap(remote2, 50000), dst: ap(extAddr, 2222), flags: tcpSYN})
	guest = append(guest, pkt{proto: TCP, src: ap(guestB, 22), dst: ap(remote2, 50000), flags: tcpSYN | tcpACK})
	send(Uplink, pkt{proto: UDP, src: ap(remote2, 50001), dst: ap(extAddr, 5353), payload: []byte("f")})
	guest = append(guest, pkt{proto: UDP, src: ap(guestB, 53), dst: ap(remote2, 50001), payload: []byte("g")})
	send(Guest, pkt{proto: TCP, src: ap(guestA, 41000), dst: ap(extAddr, 2222), flags: tcpSYN})
	require.Equal(t, 9, e.Len())
	return guest, uplink
}

func flowList(e *Engine) []FlowInfo {
	var out []FlowInfo
	e.Flows(func(f FlowInfo) bool { out = append(out, f); return true })
	slices.SortFunc(out, func(a, b FlowInfo) int {
		if c := a.Orig.Src.Compare(b.Orig.Src); c != 0 {
			return c
		}
		if c := a.Orig.Dst.Compare(b.Orig.Dst); c != 0 {
			return c
		}
		return int(a.Orig.Proto) - int(b.Orig.Proto)
	})
	return out
}

func TestSnapshotRoundTrip(t *testing.T) {
	a, clkA := newEngine(t, nil)
	guest, uplink := persistFlows(t, a)
	clkA.Advance(3 * time.Second)
	snap, n := a.AppendSnapshot(nil)
	require.Equal(t, 9, n)
	require.Len(t, snap, snapHdrLen+n*SnapshotBytesPerFlow+snapTailLen)

	// A new engine (another hash seed), a second after the snapshot.
	b, clkB := newEngine(t, nil)
	clkB.Advance(clkA.Now().Add(time.Second).Sub(clkB.Now()))
	st, err := b.Restore(snap)
	require.NoError(t, err)
	require.Equal(t, RestoreStats{Restored: 9, SavedAt: clkA.Now()}, st)
	wa, wb := flowList(a), flowList(b)
	require.Len(t, wb, len(wa))
	for i := range wa {
		require.Equal(t, wa[i].Orig, wb[i].Orig)
		require.Equal(t, wa[i].Reply, wb[i].Reply)
		require.Equal(t, wa[i].OrigSide, wb[i].OrigSide)
		require.Equal(t, wa[i].State, wb[i].State)
		require.Equal(t, wa[i].Expires, wb[i].Expires, "the deadline is kept")
	}
	sa, sb := a.Stats(), b.Stats()
	require.Equal(t, sa.FlowsTCP, sb.FlowsTCP)
	require.Equal(t, sa.FlowsUDP, sb.FlowsUDP)
	require.Equal(t, sa.FlowsICMP, sb.FlowsICMP)
	require.Equal(t, sa.TCPStates, sb.TCPStates)
	require.Equal(t, sa.UDPMappings, sb.UDPMappings)

	// Every packet is translated to the same bytes (external port,
	// checksums) by both engines.
	clkA.Advance(time.Second)
	for _, c := range []struct {
		from Side
		ps   []pkt
	}{{Guest, guest}, {Uplink, uplink}} {
		for _, p := range c.ps {
			pa, pb := one(a, c.from, p.build(), 0), one(b, c.from, p.build(), 0)
			require.NotEqual(t, Drop, pa.Verdict, "%+v: %v", p, pa.Reason)
			require.Equal(t, pa.Verdict, pb.Verdict, "%+v: %v", p, pb.Reason)
			require.Equal(t, pa.Buf, pb.Buf, "%+v", p)
			checkSums(t, pb.Buf)
		}
	}
	require.Zero(t, b.Stats().Created, "no flow opened anew")

	// Restoring the same snapshot again: every record collides.
	st, err = b.Restore(snap)
	require.NoError(t, err)
	require.Equal(t, 9, st.Refused)
	require.Equal(t, 9, b.Len())

	// Reclaiming restored flows releases their quota and mappings.
	clkB.Advance(6 * 24 * time.Hour)
	require.Equal(t, 9, b.Expire())
	s := b.Stats()
	require.Zero(t, s.FlowsTCP+s.FlowsUDP+s.FlowsICMP+s.UDPMappings)
	require.Zero(t, b.Len())
}

func TestSnapshotExpiry(t *testing.T) {
	a, clkA := newEngine(t, nil)
	r := ap(remote, 53)
	one(a, Guest, pkt{proto: UDP, src: ap(guestA, 6000), dst: r, payload: []byte("q")}.build(), 0) // 120 s
	one(a, Guest, pkt{proto: ICMP, src: ap(guestA, 9), dst: ap(remote, 0)}.build(), 0)             // 30 s
	snap, n := a.AppendSnapshot(nil)
	require.Equal(t, 2, n)

	// Down for 40 s: the echo flow expired, the UDP flow has 80 s left.
	b, clkB := newEngine(t, nil)
	clkB.Advance(clkA.Now().Add(40 * time.Second).Sub(clkB.Now()))
	st, err := b.Restore(snap)
	require.NoError(t, err)
	require.Equal(t, 1, st.Restored)
	require.Equal(t, 1, st.Expired)
	reply := pkt{proto: UDP, src: r, dst: ap(extAddr, 6000), payload: []byte("a")}
	clkB.Advance(79 * time.Second)
	p := one(b, Uplink, reply.build(), 0)
	require.Equal(t, ToGuest, p.Verdict, "%v", p.Reason)

	// A shorter timeout in the new configuration bounds what is left.
	c, clkC := newEngine(t, func(c *Config) { c.Timeouts.UDP = 10 * time.Second })
	clkC.Advance(clkA.Now().Sub(clkC.Now()))
	st, err = c.Restore(snap)
	require.NoError(t, err)
	require.Equal(t, 2, st.Restored)
	clkC.Advance(11 * time.Second)
	p = one(c, Uplink, reply.build(), 0)
	require.Equal(t, Drop, p.Verdict)
	require.Equal(t, ReasonNoFlow, p.Reason)

	// Dead flows are not written.
	clkA.Advance(time.Hour)
	_, n = a.AppendSnapshot(nil)
	require.Zero(t, n)
}

func TestSnapshotConfigChange(t *testing.T) {
	a, clkA := newEngine(t, func(c *Config) { c.PortMin, c.PortMax = 30000, 30999 })
	persistFlows(t, a)
	snap, _ := a.AppendSnapshot(nil)
	for _, c := range []struct {
		name     string
		mod      func(*Config)
		restored int
		skipped  int
		refused  int
	}{
		{"same", nil, 9, 0, 0},
		{"other external address", func(c *Config) { c.External = routerHop }, 0, 9, 0},
		{"other guest prefix", func(c *Config) { c.GuestPrefix = netip.MustParsePrefix("10.1.0.0/16") }, 0, 9, 0},
		// The second guest's external port (from 30000..30999) is out of
		// the new range.
		{"port range", func(c *Config) { c.PortMin, c.PortMax = 40000, 40001 }, 8, 1, 0},
		// With a shared address, the guest's own ports must be in the
		// range too: the UDP mapping of port 6000 (both its flows) and
		// ICMP identifier 77 no longer fit; 40000, 40001 and 41000 do.
		{"shared address", func(c *Config) { c.PortMin, c.PortMax, c.SharedAddress = 40000, 41000, true }, 5, 4, 0},
		{"table limit", func(c *Config) { c.MaxFlows, c.MaxFlowsPerGuest = 4, 4 }, 4, 0, 5},
		// guestA owns 6 flows (its UDP mapping's inbound one too), guestB 3.
		{"quota", func(c *Config) { c.MaxFlowsPerGuest = 2 }, 4, 0, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, clkB := newEngine(t, c.mod)
			clkB.Advance(clkA.Now().Sub(clkB.Now()))
			st, err := b.Restore(snap)
			require.NoError(t, err)
			require.Equal(t, c.restored, st.Restored, "%+v", st)
			require.Equal(t, c.skipped, st.Skipped, "%+v", st)
			require.Equal(t, c.refused, st.Refused, "%+v", st)
			require.Equal(t, c.restored, b.Len())
		})
	}
}

// reseal recomputes a snapshot's checksum after a test changed it.
func reseal(b []byte) []byte {
	binary.BigEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], crc32c))
	return b
}

func TestSnapshotDamaged(t *testing.T) {
	a, _ := newEngine(t, nil)
	persistFlows(t, a)
	good, _ := a.AppendSnapshot(nil)
	damage := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"not a snapshot", []byte(`{"version":1,"flows":[]}`)},
		{"truncated header", good[:20]},
		{"truncated record", good[:len(good)-10]},
		{"no trailer", good[:len(good)-4]},
		{"trailing garbage", append(slices.Clone(good), 0)},
		{"bit flip in a record", damage(func(b []byte) []byte { b[snapHdrLen+5] ^= 1; return b })},
		{"bit flip in the checksum", damage(func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b })},
		{"other version", damage(func(b []byte) []byte { b[9] = 2; return reseal(b) })},
		{"other record length", damage(func(b []byte) []byte { b[11] = 40; return reseal(b) })},
		{"count too large", damage(func(b []byte) []byte { binary.BigEndian.PutUint32(b[12:], 1<<31); return reseal(b) })},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, _ := newEngine(t, nil)
			st, err := b.Restore(c.b)
			require.ErrorIs(t, err, ErrSnapshot)
			require.Zero(t, st.Restored)
			require.Zero(t, b.Len(), "nothing restored from a damaged snapshot")
		})
	}

	// Records that are well sealed but inconsistent are skipped one by one.
	for _, c := range []struct {
		name string
		off  int
		val  byte
	}{
		{"protocol", 24, 99},
		{"side", 25, 7},
		{"state", 27, byte(NumTCPStates)},
		{"unknown flag", 28, 0x80},
		{"unknown extra bit", 29, 2},
		{"reply key's destination", 12 + 7, 0x42},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad := slices.Clone(good)
			for i := range 9 {
				bad[snapHdrLen+i*snapRecLen+c.off] = c.val
			}
			b, _ := newEngine(t, nil)
			st, err := b.Restore(reseal(bad))
			require.NoError(t, err)
			require.Zero(t, st.Restored, "%+v", st)
			require.Equal(t, 9, st.Skipped+st.Expired, "%+v", st)
		})
	}
}

func TestSnapshotActivity(t *testing.T) {
	e, clk := newEngine(t, nil)
	a0 := e.Activity()
	clk.Advance(time.Second)
	require.Equal(t, a0, e.Activity(), "time alone changes nothing")
	p := one(e, Guest, pkt{proto: UDP, src: ap(guestA, 6000), dst: ap(remote, 53)}.build(), 0)
	require.Equal(t, ToUplink, p.Verdict)
	a1 := e.Activity()
	require.NotEqual(t, a0, a1)
	one(e, Guest, pkt{proto: UDP, src: ap(guestA, 6000), dst: ap(remote, 53)}.build(), 0)
	require.NotEqual(t, a1, e.Activity(), "a packet moves the deadline")
}

// TestSnapshotConcurrent takes snapshots while packets are translated
// (go test -race).
func TestSnapshotConcurrent(t *testing.T) {
	e := benchEngine(t, 4096)
	establish(t, e, 1000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		g := newBenchGen()
		ps := newBatch(64)
		for range 200 {
			g.fill(ps, 1000, Uplink, tcpACK)
			e.Translate(Uplink, ps)
		}
	}()
	var buf []byte
	for range 20 {
		var n int
		buf, n = e.AppendSnapshot(buf[:0])
		require.Equal(t, 1000, n)
	}
	<-done
}

func BenchmarkSnapshot(b *testing.B) {
	const flows = 100_000
	e := benchEngine(b, 1<<17)
	establish(b, e, flows)
	buf, _ := e.AppendSnapshot(nil)
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = e.AppendSnapshot(buf[:0])
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/flows, "ns/flow")
		b.ReportMetric(float64(len(buf))/flows, "B/flow")
	})
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			r := benchEngine(b, 1<<17)
			b.StartTimer()
			if st, err := r.Restore(buf); err != nil || st.Restored != flows {
				b.Fatal(st, err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/flows, "ns/flow")
	})
}

// FuzzRestore feeds Restore arbitrary snapshots: raw, and resealed with a
// valid header and checksum so that the records themselves are exercised.
// Whatever it restores must be a consistent table: snapshotted again, the
// same flows come back.
func FuzzRestore(f *testing.F) {
	a, _ := newEngine(f, nil)
	r := ap(remote, 443)
	one(a, Guest, pkt{proto: TCP, src: ap(guestA, 40000), dst: r, flags: tcpSYN}.build(), 0)
	one(a, Guest, pkt{proto: TCP, src: ap(guestB, 40000), dst: r, flags: tcpSYN}.build(), 0)
	one(a, Guest, pkt{proto: UDP, src: ap(guestA, 6000), dst: r}.build(), 0)
	one(a, Guest, pkt{proto: ICMP, src: ap(guestA, 5), dst: ap(remote, 0)}.build(), 0)
	good, _ := a.AppendSnapshot(nil)
	f.Add(good, false)
	f.Add(good[snapHdrLen:len(good)-4], true)
	f.Add([]byte{}, true)
	f.Fuzz(func(t *testing.T, b []byte, seal bool) {
		if seal {
			n := len(b) / snapRecLen
			hdr := slices.Clone(good[:snapHdrLen])
			binary.BigEndian.PutUint32(hdr[12:], uint32(n))
			b = reseal(append(append(hdr, b[:n*snapRecLen]...), 0, 0, 0, 0))
		}
		e, _ := newEngine(t, func(c *Config) { c.MaxFlows = 64; c.MaxFlowsPerGuest = 8 })
		st, err := e.Restore(b)
		if err != nil {
			require.Zero(t, e.Len())
			return
		}
		require.Equal(t, st.Restored, e.Len())
		snap, n := e.AppendSnapshot(nil)
		require.Equal(t, st.Restored, n)
		e2, _ := newEngine(t, func(c *Config) { c.MaxFlows = 64; c.MaxFlowsPerGuest = 8 })
		st2, err := e2.Restore(snap)
		require.NoError(t, err)
		require.Equal(t, st.Restored, st2.Restored, "%+v", st2)
		// Reclaiming everything leaves the engine empty and consistent.
		e.cfg.Clock = func() time.Time { return time.Unix(1_000_000, 0).Add(7 * 24 * time.Hour) }
		require.Equal(t, st.Restored, e.Expire())
		s := e.Stats()
		require.Zero(t, s.FlowsTCP+s.FlowsUDP+s.FlowsICMP+s.UDPMappings)
	})
}
