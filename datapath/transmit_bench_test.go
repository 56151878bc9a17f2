package datapath

import (
	"runtime"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// BenchmarkTransmit measures a guest port's transmit batch (GuestPort.txOnce:
// pop, txFrame, the peer, push, publish) at 64 B into the measurement
// uplinks of bench/vs-dpdk.sh's like-for-like cases: the copying sink
// (f2b-copy) and the loopback (loop, back into the same guest's receive
// queue). As BenchmarkGuestToGuest, one goroutine plays the guest (its
// ring work is included) and the worker, so the guest's buffers are hot in
// cache: it measures the backend's instructions per frame, not the cache
// misses of a frontend on another CPU (bench/arcnet-ab.sh does):
//
//	go test -run '^$' -bench Transmit -count 5 ./datapath/
func BenchmarkTransmit(b *testing.B) {
	mrg := baseFeatures | virtio.NetFMrgRxbuf
	frame := udp4Frame(macB, macA, ipA, ipB, 1000, 2000, 64-42)
	for _, peer := range []string{"sink-copy", "loopback"} {
		for _, packed := range []bool{false, true} {
			name := peer
			features := mrg
			if packed {
				name += "/packed"
				features |= virtio.FRingPacked
			}
			b.Run(name, func(b *testing.B) {
				g := newBenchGuest(b, "guest0", features, virtio.NetHdr{}, frame, 2048)
				var sink *Sink
				if peer == "sink-copy" {
					sink = NewCopySink("sink")
					g.port.SetPeer(sink)
				} else {
					g.port.SetPeer(NewLoopback("lo", g.port))
				}
				const batch = 32
				seq := 0
				g.transmit(b, batch, &seq, g)
				runtime.GC()
				b.SetBytes(int64(len(frame)))
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; {
					n := min(batch, b.N-done)
					g.transmit(b, n, &seq, g)
					done += n
				}
				b.StopTimer()
				reportRates(b, len(frame))
				if got := g.port.Stats().RxPackets.Load(); got != uint64(b.N+batch) {
					b.Fatalf("port took %d frames, want %d", got, b.N+batch)
				}
				if sink != nil && sink.Stats().TxPackets.Load() != uint64(b.N+batch) {
					b.Fatalf("sink got %d frames, want %d", sink.Stats().TxPackets.Load(), b.N+batch)
				}
			})
		}
	}
}
