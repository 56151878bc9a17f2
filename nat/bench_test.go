package nat

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/internal/testclock"
)

// Benchmark flows: flow j is guest 10.0.1.(j%256) port 1024+j/256 to
// 100.64.(j%256).1:443, so every guest talks to its own remote and keeps its
// port (external port = guest port). Packets are generated in place from a
// 40-byte template (checksums are not verified by the engine, so the
// template's need not match); the generator costs a few ns per packet and is
// included in the figures (BenchmarkGenerator measures it alone).

var (
	benchPrefix = netip.MustParsePrefix("10.0.0.0/16")
	benchExt    = netip.MustParseAddr("198.51.100.1")
)

func benchGuest(j int) (uint32, uint16) { return 0x0a000100 | uint32(j&255), uint16(1024 + j>>8) }
func benchRemote(j int) uint32          { return 0x64400001 | uint32(j&255)<<8 }

type benchGen struct {
	out, in [40]byte
	ext     uint32
	rng     uint64
}

func newBenchGen() *benchGen {
	g := &benchGen{ext: binary.BigEndian.Uint32(benchExt.AsSlice()), rng: 1}
	mk := func(b []byte) {
		header.IPv4(b).Encode(&header.IPv4Fields{TotalLength: 40, TTL: 64, Protocol: 6,
			Src: netip.AddrFrom4([4]byte{10, 0, 1, 0}), Dst: netip.AddrFrom4([4]byte{100, 64, 0, 1})})
		header.TCP(b[20:]).Encode(&header.TCPFields{SrcPort: 1, DstPort: 443, Flags: tcpACK, Window: 1000})
	}
	mk(g.out[:])
	mk(g.in[:])
	return g
}

// put writes the packet of flow j from side from into b.
func (g *benchGen) put(b []byte, j int, from Side, fl uint8) {
	addr, port := benchGuest(j)
	if from == Guest {
		*(*[40]byte)(b) = g.out
		binary.BigEndian.PutUint32(b[12:], addr)
		binary.BigEndian.PutUint32(b[16:], benchRemote(j))
		binary.BigEndian.PutUint16(b[20:], port)
	} else {
		*(*[40]byte)(b) = g.in
		binary.BigEndian.PutUint32(b[12:], benchRemote(j))
		binary.BigEndian.PutUint32(b[16:], g.ext)
		binary.BigEndian.PutUint16(b[20:], 443)
		binary.BigEndian.PutUint16(b[22:], port)
	}
	b[33] = fl
}

// fill writes packets of random flows among n into ps.
func (g *benchGen) fill(ps []Packet, n int, from Side, fl uint8) {
	for i := range ps {
		g.rng = g.rng*6364136223846793005 + 1442695040888963407
		j := int((g.rng >> 32) * uint64(n) >> 32) // in [0, n) without a division
		ps[i].Buf = ps[i].Buf[:40]
		g.put(ps[i].Buf, j, from, fl)
		ps[i].Flags = 0
	}
}

// fillSeq writes packets of flows j0.. in order.
func (g *benchGen) fillSeq(ps []Packet, j0 int, from Side, fl uint8) {
	for i := range ps {
		ps[i].Buf = ps[i].Buf[:40]
		g.put(ps[i].Buf, j0+i, from, fl)
		ps[i].Flags = 0
	}
}

func newBatch(n int) []Packet {
	ps := make([]Packet, n)
	for i := range ps {
		ps[i].Buf = make([]byte, 40, 128)
	}
	return ps
}

func benchEngine(tb testing.TB, maxFlows int) *Engine {
	clk := testclock.New(time.Unix(1_000_000, 0))
	e, err := New(Config{External: benchExt, GuestPrefix: benchPrefix, MaxFlows: maxFlows,
		MaxFlowsPerGuest: maxFlows, Clock: clk.Now})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// establish opens n TCP flows with a full handshake.
func establish(tb testing.TB, e *Engine, n int) {
	g := newBenchGen()
	ps := newBatch(256)
	for _, step := range []struct {
		from Side
		fl   uint8
	}{{Guest, tcpSYN}, {Uplink, tcpSYN | tcpACK}, {Guest, tcpACK}} {
		for j := 0; j < n; j += 256 {
			b := ps[:min(256, n-j)]
			g.fillSeq(b, j, step.from, step.fl)
			e.Translate(step.from, b)
			for i := range b {
				if b[i].Verdict == Drop {
					tb.Fatalf("setup flow %d: %v", j+i, b[i].Reason)
				}
			}
		}
	}
	if s := e.Stats(); s.TCPStates[TCPEstablished] != uint64(n) {
		tb.Fatalf("established %d, want %d", s.TCPStates[TCPEstablished], n)
	}
}

var benchEngines = map[int]*Engine{}

func sharedEngine(b *testing.B, n int) *Engine {
	e := benchEngines[n]
	if e == nil {
		e = benchEngine(b, n)
		establish(b, e, n)
		benchEngines[n] = e
	}
	return e
}

// runTranslate measures batches of random established flows among n.
func runTranslate(b *testing.B, e *Engine, n, batch int, from Side) {
	g := newBenchGen()
	ps := newBatch(batch)
	b.SetBytes(40)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuSeconds()
	for done := 0; done < b.N; done += batch {
		g.fill(ps, n, from, tcpACK)
		e.Translate(from, ps)
	}
	reportRates(b, cpu0)
	if ps[0].Verdict == Drop {
		b.Fatalf("dropped: %v", ps[0].Reason)
	}
}

func BenchmarkTranslate(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		for _, from := range []Side{Guest, Uplink} {
			for _, batch := range []int{32, 256} {
				dir := "out"
				if from == Uplink {
					dir = "in"
				}
				b.Run(fmt.Sprintf("flows=%d/%s/batch=%d", n, dir, batch), func(b *testing.B) {
					runTranslate(b, sharedEngine(b, n), n, batch, from)
				})
			}
		}
	}
}

// BenchmarkTranslateVariants runs outbound batches of 256 at 1k and 1M
// flows without the batch's prefetching passes (serial) and without the
// direct-mapped cache (nocache), to compare with BenchmarkTranslate.
func BenchmarkTranslateVariants(b *testing.B) {
	for _, v := range []string{"serial", "nocache"} {
		for _, n := range []int{1_000, 1_000_000} {
			b.Run(fmt.Sprintf("%s/flows=%d/out/batch=256", v, n), func(b *testing.B) {
				var e *Engine
				if v == "serial" {
					batchPrefetch = false
					defer func() { batchPrefetch = true }()
					e = sharedEngine(b, n)
				} else {
					e = benchEngine(b, n)
					e.tab.cache = nil
					establish(b, e, n)
				}
				runTranslate(b, e, n, 256, Guest)
			})
		}
	}
}

// reportRates reports Mpps by wall time and by CPU time (cpu-Mpps: the rate
// per busy core, robust against other processes taking the CPU).
func reportRates(b *testing.B, cpu0 float64) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mpps")
	if c := cpuSeconds() - cpu0; c > 0 {
		b.ReportMetric(float64(b.N)/c/1e6, "cpu-Mpps")
	}
}

// BenchmarkGenerator measures the benchmark's packet generator alone, to be
// subtracted from BenchmarkTranslate.
func BenchmarkGenerator(b *testing.B) {
	g := newBenchGen()
	ps := newBatch(256)
	b.ReportAllocs()
	cpu0 := cpuSeconds()
	for done := 0; done < b.N; done += 256 {
		g.fill(ps, 1_000_000, Guest, tcpACK)
	}
	reportRates(b, cpu0)
}

// BenchmarkNewFlows measures flow setup (outbound SYN of a new flow) and the
// memory per flow: heap growth over the flows opened, with the engine's
// fixed tables (65536-entry port map, wheel, fragment table) excluded; the
// flow index, which New sizes for MaxFlows, counts as per-flow memory (fixed
// is measured on an engine for one flow).
func BenchmarkNewFlows(b *testing.B) {
	const n = 1 << 20
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	e := benchEngine(b, 1)
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	fixed := ms1.HeapAlloc - ms0.HeapAlloc
	runtime.KeepAlive(e)
	e = benchEngine(b, n)
	g := newBenchGen()
	ps := newBatch(256)
	b.ReportAllocs()
	b.ResetTimer()
	opened := 0
	cpu0 := cpuSeconds()
	for done := 0; done < b.N; done += 256 {
		if opened+256 > n {
			b.StopTimer()
			e = benchEngine(b, n)
			opened = 0
			b.StartTimer()
		}
		g.fillSeq(ps, opened, Guest, tcpSYN)
		e.Translate(Guest, ps)
		opened += 256
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	if c := cpuSeconds() - cpu0; c > 0 {
		b.ReportMetric(float64(b.N)/c, "cpu-flows/s")
	}
	b.StopTimer()
	// Memory per flow, measured on a full table.
	e = nil
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	e = benchEngine(b, n)
	for j := 0; j < n; j += 256 {
		g.fillSeq(ps, j, Guest, tcpSYN)
		e.Translate(Guest, ps)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	if e.Len() != n {
		b.Fatalf("opened %d flows, want %d", e.Len(), n)
	}
	b.ReportMetric(float64(ms1.HeapAlloc-ms0.HeapAlloc-fixed)/float64(n), "B/flow")
	runtime.KeepAlive(e)
}

// BenchmarkIndexVsMap compares the flow index with a Go map[flowKey]uint32 for
// lookups of random existing keys among 1M flows (2M keys): the reason for
// the custom index.
func BenchmarkIndexVsMap(b *testing.B) {
	const n = 1 << 20
	keys := make([]flowKey, n)
	for j := range keys {
		a, p := benchGuest(j)
		keys[j] = flowKey{Src: addr(a), Dst: addr(benchRemote(j)),
			SrcPort: p, DstPort: 443, Proto: TCP}
	}
	order := make([]uint32, 1<<16)
	for i := range order {
		order[i] = rand.Uint32N(n)
	}
	b.Run("index", func(b *testing.B) {
		var t table
		t.init(n, -1, [6]uint64{1, 2, 3, 4, 5, 6})
		for j := range keys {
			i := t.alloc()
			f := t.flow(i)
			k1 := keys[j]
			k1.Side = Uplink
			f.setKeys(&keys[j], &k1)
			t.insert(i)
		}
		b.ResetTimer()
		var sink ref
		for i := range b.N {
			k := &keys[order[i&(len(order)-1)]]
			sink += t.lookup(k, k.hash(&t.seed))
		}
		if sink == 0 {
			b.Fatal("nothing found")
		}
	})
	b.Run("gomap", func(b *testing.B) {
		m := make(map[flowKey]uint32, 2*n)
		for j := range keys {
			m[keys[j]] = uint32(j) + 1
			k := keys[j]
			k.Side = Uplink
			m[k] = uint32(j) + 1
		}
		b.ResetTimer()
		var sink uint32
		for i := range b.N {
			sink += m[keys[order[i&(len(order)-1)]]]
		}
		if sink == 0 {
			b.Fatal("nothing found")
		}
	})
}
