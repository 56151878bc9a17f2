package datapath

import (
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// Guest to guest through the switch, measured against Go's copy() of the
// same frame sizes in the same run (BENCHMARKS.md "Physical limits"): hot
// in cache (copy/), and over the same memory as the switch benchmark's
// buffers (copyring/):
//
//	go test -run '^$' -bench GuestToGuest -benchtime 2s ./datapath/
//
// Both guests are virtiotest drivers in ordinary memory; the benchmark
// plays both guests and the sender's transmit worker on one goroutine: per
// iteration it makes a batch of frames available on the sender's transmit
// queue (descriptors pointing at prepared buffers, no copy), runs one
// transmit batch of the GuestPort (pop, switch with anti-spoofing, write
// into the receiver's receive queue, publish both used rings), and gives
// the used buffers back. The guest side's ring work is included in the
// figures; the frame bytes are copied once, from the sender's transmit
// buffer into the receiver's receive buffers.

// benchGuest is one guest of the benchmark: a GuestPort without workers
// and the driver side of its two queues.
type benchGuest struct {
	port     *GuestPort
	txd, rxd *virtiotest.Driver
	txq      *virtio.Queue
	txb      *txBatch
	call     *counter
	txBufs   []uint64 // guest addresses of the prepared transmit buffers
	txLen    uint32
	rxSlot   uint32
	rxNext   int
	elem     [1]virtiotest.Elem
}

const (
	benchTxRing  = 256
	benchRxRing  = 1024
	benchTxBufs  = 64
	benchGPA     = 0x1000_0000
	benchRxGPA   = 0x4000_0000
	benchMaxRxIn = 32 // frames per batch at most
)

// newBenchGuest makes a guest with features. If frame is not nil, its
// transmit buffers hold hdr+frame; rxSlot is the size of its receive
// buffers.
func newBenchGuest(b *testing.B, name string, features uint64, hdr virtio.NetHdr, frame []byte, rxSlot uint32) *benchGuest {
	b.Helper()
	txSlot := uint32((virtio.NetHdrSize + len(frame) + 63) &^ 63)
	if txSlot == 0 {
		txSlot = 64
	}
	txMem := make([]byte, 64<<10+benchTxBufs*int(txSlot))
	rxMem := make([]byte, 64<<10+benchRxRing*int(rxSlot))
	packed := features&virtio.FRingPacked != 0
	txd, err := virtiotest.NewDriver(txMem, benchGPA, benchTxRing, virtiotest.DriverOptions{SlotSize: txSlot, Packed: packed})
	if err != nil {
		b.Fatal(err)
	}
	rxd, err := virtiotest.NewDriver(rxMem, benchRxGPA, benchRxRing, virtiotest.DriverOptions{SlotSize: rxSlot, Packed: packed})
	if err != nil {
		b.Fatal(err)
	}
	mem, err := virtio.NewMemory([]virtio.Region{txd.Region(), rxd.Region()})
	if err != nil {
		b.Fatal(err)
	}
	txq, err := virtio.NewQueue(mem, txd.Config(features))
	if err != nil {
		b.Fatal(err)
	}
	rxq, err := virtio.NewQueue(mem, rxd.Config(features))
	if err != nil {
		b.Fatal(err)
	}
	p, err := NewGuestPort(GuestPortOptions{Name: name, QueuePairs: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	g := &benchGuest{port: p, txd: txd, rxd: rxd, txq: txq, txb: newTxBatch(txq), call: &counter{},
		txLen: uint32(virtio.NetHdrSize + len(frame)), rxSlot: rxSlot}
	// The receive queue: no worker is needed, frames are written by
	// whoever sends them. The transmit queue is driven by the benchmark.
	p.StartQueue(0, rxq, nil, g.call)
	if frame != nil {
		for i := 0; i < benchTxBufs; i++ {
			gpa, buf := txd.Slot(i)
			hdr.Encode(buf)
			copy(buf[virtio.NetHdrSize:], frame)
			g.txBufs = append(g.txBufs, gpa)
		}
	}
	g.postRX(benchRxRing)
	return g
}

// postRX makes n more receive buffers available, in ring order.
func (g *benchGuest) postRX(n int) {
	for i := 0; i < n; i++ {
		gpa, _ := g.rxd.Slot(g.rxNext)
		g.rxNext = (g.rxNext + 1) % benchRxRing
		g.elem[0] = virtiotest.Elem{GPA: gpa, Len: g.rxSlot, Write: true}
		if _, err := g.rxd.AddElems(g.elem[:], false); err != nil {
			panic(err)
		}
	}
	g.rxd.Publish()
}

// transmit runs one batch of n frames from g's transmit queue and returns
// the receive buffers r used, given back to it.
func (g *benchGuest) transmit(b *testing.B, n int, seq *int, r *benchGuest) {
	for i := 0; i < n; i++ {
		g.elem[0] = virtiotest.Elem{GPA: g.txBufs[*seq%benchTxBufs], Len: g.txLen}
		*seq++
		if _, err := g.txd.AddElems(g.elem[:], false); err != nil {
			b.Fatal(err)
		}
	}
	g.txd.Publish()
	if k, err := g.port.txOnce(0, g.txq, g.call, g.txb); k != n || err != nil {
		b.Fatalf("txOnce = %d, %v", k, err)
	}
	for ok := true; ok; _, ok = g.txd.Used() {
	}
	used := 0
	for {
		if _, ok := r.rxd.Used(); !ok {
			break
		}
		used++
	}
	r.postRX(used)
}

func BenchmarkGuestToGuest(b *testing.B) {
	mrg := baseFeatures | virtio.NetFMrgRxbuf
	cases := []struct {
		name       string
		size       int
		gso        bool
		rxFeatures uint64
		rxSlot     uint32
		batch      int
	}{
		{"64B", 64, false, mrg, 2048, 32},
		// A TCP ACK as Linux guests send it: a partial checksum
		// (NEEDS_CSUM, no GSO) to a receiver with GUEST_CSUM.
		{"66B-TCP-csum", 66, false, mrg | virtio.NetFGuestCsum, 2048, 32},
		{"1500B", 1500, false, mrg, 2048, 32},
		{"64KiB-GSO", 65536, true, mrg | virtio.NetFGuestCsum | virtio.NetFGuestTSO4, 4096, 32},
		// The receiver lacks GUEST_TSO4: the switch segments each frame
		// into 46 frames of 1448 bytes (partial checksums, GUEST_CSUM).
		{"64KiB-GSO-segmented", 65536, true, mrg | virtio.NetFGuestCsum, 4096, 16},
	}
	seen := map[string]bool{}
	// Split rings, then the same with packed rings on both guests
	// (issue 14): one run compares them.
	for _, c := range append(cases, cases...) {
		if len(cases) == 0 {
			break
		}
		if c.rxFeatures&virtio.FRingPacked == 0 && seen[c.name] {
			c.name = "packed-" + c.name
			c.rxFeatures |= virtio.FRingPacked
		}
		seen[c.name] = true
		b.Run("switch/"+c.name, func(b *testing.B) {
			leases := newFakeLeases()
			leases.set(macA, ipA)
			sw, err := NewSwitch(SwitchOptions{Leases: leases, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			var frame []byte
			var hdr virtio.NetHdr
			txFeatures := mrg | c.rxFeatures&virtio.FRingPacked
			if c.gso {
				frame, hdr = tcpGSOFrame(gsoSpec{payload: c.size - 66, mss: 1448, flags: header.TCPFlagACK}, macA, macB)
				txFeatures |= virtio.NetFCsum | virtio.NetFHostTSO4
			} else if c.rxFeatures&virtio.NetFGuestCsum != 0 {
				frame, hdr = tcpGSOFrame(gsoSpec{payload: c.size - 66, mss: 1448, flags: header.TCPFlagACK}, macA, macB)
				hdr.GSOType, hdr.GSOSize, hdr.HdrLen = virtio.NetHdrGSONone, 0, 0
				txFeatures |= virtio.NetFCsum
			} else {
				frame = udp4Frame(macB, macA, ipA, ipB, 1000, 2000, c.size-42)
			}
			if len(frame) != c.size {
				b.Fatalf("frame of %d bytes", len(frame))
			}
			tx := newBenchGuest(b, "guest0", txFeatures, hdr, frame, 2048)
			rx := newBenchGuest(b, "guest1", c.rxFeatures, virtio.NetHdr{}, nil, c.rxSlot)
			if _, err := sw.Attach(tx.port, PortOptions{}); err != nil { // MAC from its first frame
				b.Fatal(err)
			}
			if _, err := sw.Attach(rx.port, PortOptions{MAC: macB}); err != nil {
				b.Fatal(err)
			}
			seq := 0
			tx.transmit(b, c.batch, &seq, rx) // warm up: claims the MAC
			before := rx.port.Stats().TxPackets.Load()
			runtime.GC() // the previous round's guest memory, not during the timed loop
			b.SetBytes(int64(c.size))
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(c.batch, b.N-done)
				tx.transmit(b, n, &seq, rx)
				done += n
			}
			b.StopTimer()
			reportRates(b, c.size)
			got := rx.port.Stats().TxPackets.Load() - before
			want := uint64(b.N)
			if strings.HasSuffix(c.name, "64KiB-GSO-segmented") {
				want *= uint64((c.size - 66 + 1447) / 1448)
			}
			if got != want || tx.port.Stats().Drops(DropSpoof) != 0 {
				b.Fatalf("receiver got %d frames, want %d; drops: rx %v", got, want, rx.port.Stats().LogAttrs())
			}
		})
		b.Run("copy/"+c.name, func(b *testing.B) { benchCopy(b, c.size) })
		b.Run("copyring/"+c.name, func(b *testing.B) { benchCopyRing(b, c.size, benchRxRing*int(c.rxSlot)) })
	}
}

// benchCopyRing is the one-copy limit with the switch benchmark's memory
// footprint: from benchTxBufs rotating source buffers into a receive area
// of rxArea bytes, written in order as the receive ring is.
func benchCopyRing(b *testing.B, size, rxArea int) {
	src := make([]byte, benchTxBufs*size)
	dst := make([]byte, max(rxArea, 2*size))
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	off := 0
	for i := 0; i < b.N; i++ {
		if off+size > len(dst) {
			off = 0
		}
		s := (i % benchTxBufs) * size
		copy(dst[off:off+size], src[s:s+size])
		off += size
	}
	b.StopTimer()
	reportRates(b, size)
}

// benchCopy is the one-copy limit: Go's copy() of size bytes between two
// buffers that stay hot in cache.
func benchCopy(b *testing.B, size int) {
	src := make([]byte, size)
	dst := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(dst, src)
	}
	b.StopTimer()
	reportRates(b, size)
}

// reportRates adds Mpps and Gbps (of frames of size bytes) to b's result.
func reportRates(b *testing.B, size int) {
	s := b.Elapsed().Seconds()
	if s == 0 {
		return
	}
	b.ReportMetric(float64(b.N)/s/1e6, "Mpps")
	b.ReportMetric(float64(b.N)*float64(size)*8/s/1e9, "Gbps")
}

// BenchmarkSwitchForward measures the switch alone: one port sends
// batches of 32 frames of 64 bytes (unicast, anti-spoofing with a lease
// table) to a port that only counts them.
func BenchmarkSwitchForward(b *testing.B) {
	leases := newFakeLeases()
	leases.set(macA, ipA)
	sw, err := NewSwitch(SwitchOptions{Leases: leases, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	a := &countPort{name: "a"}
	spA, _ := sw.Attach(a, PortOptions{MAC: macA})
	_, _ = sw.Attach(&countPort{name: "b"}, PortOptions{MAC: macB})
	_, _ = sw.Attach(&countPort{name: "c"}, PortOptions{MAC: macC})
	f := udp4Frame(macB, macA, ipA, ipB, 1, 2, 22)
	frames := make([]Frame, 32)
	for i := range frames {
		frames[i] = frameOf(f)
	}
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(len(frames), b.N-done)
		spA.Send(frames[:n])
		done += n
	}
	b.StopTimer()
	reportRates(b, len(f))
}
