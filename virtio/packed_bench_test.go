package virtio_test

import (
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// BenchmarkPackedNetRXCrossCore is BenchmarkNetRXCrossCore on a packed
// ring: the receive path (NetRX.WritePlain, the b2f case, or Write) in the
// benchmark goroutine, the driver on another thread, which reads each used
// descriptor and its frame's num_buffers and makes the slot's buffer
// available again (packedFeed: the whole descriptor rewritten, flags
// last). So the descriptor lines and the buffers move between the two
// cores as they do between a guest and vhost-arcnet, and the device's
// stores into them miss. It uses only the API of older trees, so that
// bench/netrx-ab.sh can copy it into one and compare.
func BenchmarkPackedNetRXCrossCore(b *testing.B) {
	if runtime.GOMAXPROCS(0) < 2 {
		b.Skip("needs GOMAXPROCS >= 2")
	}
	for _, tc := range []struct {
		name     string
		features uint64
		frame    int
		plain    bool
	}{
		{"plain/mergeable/64B", virtio.FVersion1 | virtio.NetFMrgRxbuf, 64, true},
		{"plain/single/64B", virtio.FVersion1, 64, true},
		{"plain/mergeable/1518B", virtio.FVersion1 | virtio.NetFMrgRxbuf, 1518, true},
		{"hdr/mergeable/64B", virtio.FVersion1 | virtio.NetFMrgRxbuf, 64, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const size, batch = 256, 64
			p, feed := rawPackedPair(b, size, tc.features, 2048, true)
			feed.add(size)
			var stop atomic.Bool
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // driver
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				used := virtiotest.PackedWrap // index 0, wrap counter 1
				sum := 0
				for !stop.Load() {
					for {
						i := used &^ virtiotest.PackedWrap
						f := p.d.ReadPackedDesc(i).Flags
						w := used&virtiotest.PackedWrap != 0
						if (f&virtiotest.DescFAvail != 0) != w || (f&virtiotest.DescFUsed != 0) != w {
							break
						}
						_, buf := p.d.Slot(int(i))
						sum += int(binary.LittleEndian.Uint16(buf[10:12]))
						feed.add(1) // the same slot: in order, the ring full
						if i+1 == size {
							used = (used ^ virtiotest.PackedWrap) &^ (virtiotest.PackedWrap - 1)
						} else {
							used++
						}
					}
				}
				_ = sum
			}()
			rx := virtio.NewNetRX(p.q)
			payload := [][]byte{frame(tc.frame)}
			p.q.DisableNotify()
			b.SetBytes(int64(tc.frame))
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; {
				k := 0
				for ; k < batch && n+k < b.N; k++ {
					var ok bool
					var err error
					if tc.plain {
						ok, err = rx.WritePlain(payload)
					} else {
						ok, err = rx.Write(virtio.NetHdr{}, payload)
					}
					if err != nil {
						b.Fatal(err)
					}
					if !ok {
						break
					}
				}
				if k > 0 {
					p.q.Publish()
					p.q.NeedNotify()
				}
				n += k
			}
			b.StopTimer()
			stop.Store(true)
			wg.Wait()
		})
	}
}

// BenchmarkPackedWritePlain is the packed receive path of b2f
// (NetRX.WritePlain, batches of 32 frames per Publish) on one thread, the
// driver's refill included (packedFeed): what it costs in instructions
// when nothing misses, a figure a busy machine disturbs less than the
// cross-core one.
func BenchmarkPackedWritePlain(b *testing.B) {
	for _, tc := range []struct {
		name     string
		features uint64
		frame    int
	}{
		{"mergeable/64B", virtio.FVersion1 | virtio.NetFMrgRxbuf, 64},
		{"single/64B", virtio.FVersion1, 64},
		{"mergeable/1518B", virtio.FVersion1 | virtio.NetFMrgRxbuf, 1518},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const batch = 32
			p, feed := rawPackedPair(b, 256, tc.features, 2048, true)
			rx := virtio.NewNetRX(p.q)
			payload := [][]byte{frame(tc.frame)}
			b.SetBytes(int64(tc.frame))
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n += batch {
				feed.add(batch)
				for range batch {
					if ok, err := rx.WritePlain(payload); !ok || err != nil {
						b.Fatal("write", ok, err)
					}
				}
				p.q.Publish()
				p.q.NeedNotify()
			}
		})
	}
}
