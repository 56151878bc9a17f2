package nat

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/internal/testclock"
)

// BenchmarkNewFlowsChurn measures flow setup in steady state at 1M flows:
// the table is full of flows that have expired, so that each new flow
// (outbound SYN) takes the place of a dead one, reclaimed by Translate's
// timing wheel or by the new flow's admission (BenchmarkNewFlows instead
// fills an empty table, paying for fresh memory). Each round of 1M new
// flows uses another destination port, and the clock then moves past their
// 1 s timeout.
func BenchmarkNewFlowsChurn(b *testing.B) {
	const n = 1 << 20
	clk := testclock.New(time.Unix(1_000_000, 0))
	e, err := New(Config{External: benchExt, GuestPrefix: benchPrefix, MaxFlows: n,
		MaxFlowsPerGuest: n, Clock: clk.Now, Timeouts: Timeouts{TCPSynSent: time.Second}})
	if err != nil {
		b.Fatal(err)
	}
	g := newBenchGen()
	ps := newBatch(256)
	round := 0
	open := func(j0 int) {
		g.fillSeq(ps, j0, Guest, tcpSYN)
		for i := range ps {
			binary.BigEndian.PutUint16(ps[i].Buf[22:], uint16(1000+round))
		}
		e.Translate(Guest, ps)
	}
	for j := 0; j < n; j += 256 {
		open(j)
	}
	clk.Advance(2 * time.Second)
	round++
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuSeconds()
	j := 0
	for done := 0; done < b.N; done += 256 {
		if j == n {
			j = 0
			round++
			clk.Advance(2 * time.Second)
		}
		open(j)
		j += 256
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	if c := cpuSeconds() - cpu0; c > 0 {
		b.ReportMetric(float64(b.N)/c, "cpu-flows/s")
	}
	if ps[0].Verdict == Drop {
		b.Fatalf("dropped: %v", ps[0].Reason)
	}
}

// BenchmarkTranslateParallel runs goroutines translating batches of 256 of
// random established flows (outbound) on one engine at once, as queues do:
// cpu-Mpps is the aggregate per CPU-second of the process, so that
// contention (a lock, a shared cache line) shows as a lower figure than
// BenchmarkTranslate's.
func BenchmarkTranslateParallel(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("flows=%d/goroutines=%d", n, workers), func(b *testing.B) {
				e := sharedEngine(b, n)
				b.SetBytes(40)
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := cpuSeconds()
				var wg sync.WaitGroup
				per := (b.N + workers - 1) / workers
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						g := newBenchGen()
						g.rng = uint64(w + 1)
						ps := newBatch(256)
						for done := 0; done < per; done += 256 {
							g.fill(ps, n, Guest, tcpACK)
							e.Translate(Guest, ps)
						}
					}()
				}
				wg.Wait()
				reportRates(b, cpu0)
			})
		}
	}
}

// BenchmarkTranslateWallClock is BenchmarkTranslate (outbound, batches of
// 256) with the engine on time.Now instead of a clock that stands still, so
// that every packet moves its flow's deadline (a store, or on the lock-free
// path a CAS) as in real traffic.
func BenchmarkTranslateWallClock(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		b.Run(fmt.Sprintf("flows=%d/out/batch=256", n), func(b *testing.B) {
			e, err := New(Config{External: benchExt, GuestPrefix: benchPrefix, MaxFlows: n,
				MaxFlowsPerGuest: n, Clock: time.Now})
			if err != nil {
				b.Fatal(err)
			}
			establish(b, e, n)
			runTranslate(b, e, n, 256, Guest)
		})
	}
}
