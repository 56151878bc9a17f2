package nat

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/internal/testclock"
	"github.com/stretchr/testify/require"
)

// TestBatchMatchesSerial runs the same mixed traffic through two engines
// above prefetchMinFlows, one with the batch's lookup passes and one packet
// by packet, and requires identical verdicts, bytes and counters: the
// candidate refs of the batch passes must never change a result, also when
// earlier packets of the same batch open, close or reclaim flows (repeated
// flows in a batch, SYN/FIN/RST, expiry while the clock moves).
func TestBatchMatchesSerial(t *testing.T) {
	defer func() { batchPrefetch = true }()
	const n = prefetchMinFlows * 2
	mk := func() (*Engine, *testclock.Clock) {
		clk := testclock.New(time.Unix(1_000_000, 0))
		e, err := New(Config{External: benchExt, GuestPrefix: benchPrefix, MaxFlows: 2 * n,
			MaxFlowsPerGuest: 2 * n, Clock: clk.Now,
			Timeouts: Timeouts{TCPEstablished: 30 * time.Second, TCPSynSent: 5 * time.Second}})
		require.NoError(t, err)
		establish(t, e, n)
		return e, clk
	}
	a, clkA := mk()
	b, clkB := mk()
	rng := rand.New(rand.NewPCG(1, 2))
	g := newBenchGen()
	pa, pb := newBatch(maxBatch), newBatch(maxBatch)
	batched := 0
	for round := range 300 {
		from := Side(rng.IntN(2))
		size := 1 + rng.IntN(maxBatch)
		j := 0
		for i := range pa[:size] {
			if i == 0 || rng.IntN(8) != 0 {
				j = rng.IntN(n + n/4) // some beyond n: new flows or no flow
			}
			fl := uint8(tcpACK)
			switch rng.IntN(32) {
			case 0:
				fl = tcpSYN
			case 1:
				fl = tcpFIN | tcpACK
			case 2:
				fl = tcpRST
			case 3:
				fl = tcpSYN | tcpACK
			}
			pa[i].Buf = pa[i].Buf[:40]
			g.put(pa[i].Buf, j, from, fl)
			pa[i].Flags = 0
			pb[i].Buf = append(pb[i].Buf[:0], pa[i].Buf...)
			pb[i].Flags = 0
		}
		if a.Len() >= prefetchMinFlows {
			batched++
		}
		batchPrefetch = true
		a.Translate(from, pa[:size])
		batchPrefetch = false
		b.Translate(from, pb[:size])
		for i := range size {
			if pa[i].Verdict != pb[i].Verdict || pa[i].Reason != pb[i].Reason || !bytes.Equal(pa[i].Buf, pb[i].Buf) {
				t.Fatalf("round %d packet %d: batch %v/%v % x, serial %v/%v % x", round, i,
					pa[i].Verdict, pa[i].Reason, pa[i].Buf, pb[i].Verdict, pb[i].Reason, pb[i].Buf)
			}
		}
		d := time.Duration(rng.IntN(300)) * time.Millisecond
		clkA.Advance(d)
		clkB.Advance(d)
	}
	require.Equal(t, b.Stats(), a.Stats())
	require.Greater(t, batched, 200, "rounds that ran the batch passes")
	require.NotZero(t, a.Stats().Expired, "no flow expired: the test misses reclaim within a batch")
}

// TestTranslateBatchAllocs guards the batch passes (above prefetchMinFlows)
// at 0 allocations; TestTranslateAllocs covers the packet-by-packet path.
func TestTranslateBatchAllocs(t *testing.T) {
	const n = prefetchMinFlows * 2
	e := benchEngine(t, n)
	establish(t, e, n)
	g := newBenchGen()
	ps := newBatch(maxBatch)
	allocs := testing.AllocsPerRun(50, func() {
		g.fill(ps, n, Guest, tcpACK)
		e.Translate(Guest, ps)
		g.fill(ps, n, Uplink, tcpACK)
		e.Translate(Uplink, ps)
	})
	require.Zero(t, allocs)
	for i := range ps {
		require.Equal(t, ToGuest, ps[i].Verdict, "packet %d: %v", i, ps[i].Reason)
	}
}
