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

// BenchmarkNetRXCrossCore is the backend->frontend path of bench/vs-dpdk.sh
// (b2f) in one process: the device writes frames into a split receive
// queue while a driver goroutine on another thread busy-polls the used
// ring, reads each frame's header (num_buffers, as virtio_user's receive
// path does) and gives the buffer straight back, descriptor rewritten. Unlike BenchmarkNetRXWrite
// the buffers, ring entries and used elements move between two CPUs' caches
// as they do with a real frontend, which is where the 64-byte path spends
// its time. Queue of 256 buffers of 2 KiB with VIRTIO_NET_F_MRG_RXBUF, as
// virtio_user's defaults; more cases in crossCoreExtra. It needs two CPUs (GOMAXPROCS >= 2) and, being a
// two-thread race, is as noisy as the machine: compare builds interleaved,
// by cpu-ns/op (the device thread's CPU time per frame) when the machine
// is busy.
func BenchmarkNetRXCrossCore(b *testing.B) {
	if runtime.GOMAXPROCS(0) < 2 {
		b.Skip("needs GOMAXPROCS >= 2")
	}
	cases := []crossCoreCase{
		{"mergeable/64B", virtio.FVersion1 | virtio.NetFMrgRxbuf, 64, nil, nil},
		{"single/64B", virtio.FVersion1, 64, nil, nil},
		{"mergeable/1518B", virtio.FVersion1 | virtio.NetFMrgRxbuf, 1518, nil, nil},
	}
	for _, tc := range append(cases, crossCoreExtra...) {
		b.Run(tc.name, func(b *testing.B) {
			const size, batch = 256, 64
			p := rawPair(b, size, tc.features, 2048, true)
			for i := range uint16(size) {
				p.d.AddHead(i)
			}
			p.d.Publish()
			var stop atomic.Bool
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // driver
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				sum := 0
				for !stop.Load() {
					got := false
					for {
						e, ok := p.d.Used()
						if !ok {
							break
						}
						gpa, buf := p.d.Slot(int(e.ID))
						sum += int(binary.LittleEndian.Uint16(buf[10:12]))
						// Refill as virtio_user and Linux do: the
						// descriptor is written again, then the ring entry.
						p.d.WriteDesc(uint16(e.ID), virtiotest.Desc{Addr: gpa, Len: 2048, Flags: virtiotest.DescFWrite})
						p.d.AddHead(uint16(e.ID))
						got = true
					}
					if got {
						p.d.Publish()
					}
				}
				_ = sum
			}()
			rx := virtio.NewNetRX(p.q)
			payload := [][]byte{frame(tc.frame)}
			p.q.DisableNotify()
			b.SetBytes(int64(tc.frame))
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ResetTimer()
			cpu0 := threadCPU()
			for n := 0; n < b.N; {
				k := 0
				if tc.batch != nil {
					k = tc.batch(rx, payload, min(batch, b.N-n))
				}
				for ; tc.batch == nil && k < batch && n+k < b.N; k++ {
					var ok bool
					var err error
					if tc.write != nil {
						ok, err = tc.write(rx, payload)
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
			if cpu := threadCPU() - cpu0; cpu > 0 {
				// The device thread's CPU time per frame: what a busy
				// machine disturbs least (the driver spins on its own).
				b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
			}
			b.StopTimer()
			stop.Store(true)
			wg.Wait()
		})
	}
}

// crossCoreCase is one case of BenchmarkNetRXCrossCore: write, when set,
// writes a frame instead of NetRX.Write with a header of zeros; batch,
// when set, writes up to n frames and returns how many it wrote.
type crossCoreCase struct {
	name     string
	features uint64
	frame    int
	write    func(rx *virtio.NetRX, payload [][]byte) (bool, error)
	batch    func(rx *virtio.NetRX, payload [][]byte, n int) int
}

// crossCoreExtra are cases of BenchmarkNetRXCrossCore that use newer API
// (bench_crosscore_api_test.go): kept apart so that this file alone also
// builds in an older tree (bench/netrx-ab.sh copies it there).
var crossCoreExtra []crossCoreCase
