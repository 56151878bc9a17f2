package virtio_test

import (
	"fmt"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// BenchmarkPopPush measures the device side of a transmit queue: pop a
// chain of one buffer, push it back, publish and check for a notification
// once per batch of 32 (the payload bytes are not touched: SetBytes gives
// the equivalent frame rate in MB/s). The driver side is two raw ring
// writes per chain.
func BenchmarkPopPush(b *testing.B) {
	for _, size := range []uint32{64, 1518} {
		for _, fe := range []struct {
			name string
			f    uint64
		}{
			{"", virtio.FVersion1}, {"/eventidx", virtio.FVersion1 | virtio.FEventIdx},
			{"/packed", virtio.FVersion1 | virtio.FRingPacked}, {"/packed-eventidx", virtio.FVersion1 | virtio.FRingPacked | virtio.FEventIdx},
		} {
			b.Run(fmt.Sprintf("%dB%s", size, fe.name), func(b *testing.B) {
				const batch = 32
				var p *pair
				var feed *packedFeed
				if fe.f&virtio.FRingPacked != 0 {
					p, feed = rawPackedPair(b, 256, fe.f, size, false)
				} else {
					p = rawPair(b, 256, fe.f, size, false)
				}
				p.q.DisableNotify()
				var c virtio.Chain
				head := uint16(0)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for n := 0; n < b.N; n += batch {
					if feed != nil {
						feed.add(batch)
					} else {
						for range batch {
							p.d.AddHead(head)
							head = (head + 1) % 256
						}
						p.d.Publish()
					}
					for range batch {
						if ok, err := p.q.Pop(&c); !ok || err != nil {
							b.Fatal("pop", ok, err)
						}
						_ = p.q.Push(c.Head, 0)
					}
					p.q.Publish()
					p.q.NeedNotify()
				}
			})
		}
	}
}

// BenchmarkPop measures Pop alone on a full ring of 32768 one-buffer
// chains.
func BenchmarkPop(b *testing.B) {
	p := newPair(b, 1, virtio.FVersion1) // for the memory only
	_ = p
	const size = 32768
	buf := make([]byte, 1<<20)
	for i := range uint32(size) {
		off := 16 * i
		putLE(buf[off:], uint64(0x80000+i), 8)
		putLE(buf[off+8:], 64, 4)
	}
	availOff := 16 * size
	usedOff := availOff + 6 + 2*size + 2
	usedOff = (usedOff + 3) &^ 3
	for i := range uint32(size) {
		putLE(buf[availOff+4+2*int(i):], uint64(i), 2)
	}
	mem, err := virtio.NewMemory([]virtio.Region{{GuestPhysAddr: 0, Size: 1 << 20, Data: buf}})
	if err != nil {
		b.Fatal(err)
	}
	cfg := virtio.QueueConfig{Size: size, DescGPA: 0, AvailGPA: uint64(availOff), UsedGPA: uint64(usedOff), Features: virtio.FVersion1}
	var c virtio.Chain
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; {
		putLE(buf[availOff+2:], 0, 2)
		q, err := virtio.NewQueue(mem, cfg)
		if err != nil {
			b.Fatal(err)
		}
		putLE(buf[availOff+2:], size, 2)
		for ; n < b.N; n++ {
			ok, err := q.Pop(&c)
			if err != nil {
				b.Fatal(err)
			}
			if !ok {
				break
			}
		}
	}
}

func putLE(b []byte, v uint64, n int) {
	for i := range n {
		b[i] = byte(v >> (8 * i))
	}
}

// BenchmarkNetRXWrite measures writing one frame (header + payload, copied)
// into the receive queue, mergeable or not, pushing and publishing per
// batch of 32.
func BenchmarkNetRXWrite(b *testing.B) {
	for _, tc := range []struct {
		name     string
		features uint64
		buf      uint32
		frame    int
	}{
		{"single/64B", virtio.FVersion1, 2048, 64},
		{"single/1518B", virtio.FVersion1, 2048, 1518},
		{"mergeable/64B", virtio.FVersion1 | virtio.NetFMrgRxbuf, 2048, 64},
		{"mergeable/1518B", virtio.FVersion1 | virtio.NetFMrgRxbuf, 2048, 1518},
		{"mergeable-3chains/1518B", virtio.FVersion1 | virtio.NetFMrgRxbuf, 600, 1518},
		{"packed/single/64B", virtio.FVersion1 | virtio.FRingPacked, 2048, 64},
		{"packed/single/1518B", virtio.FVersion1 | virtio.FRingPacked, 2048, 1518},
		{"packed/mergeable/64B", virtio.FVersion1 | virtio.FRingPacked | virtio.NetFMrgRxbuf, 2048, 64},
		{"packed/mergeable/1518B", virtio.FVersion1 | virtio.FRingPacked | virtio.NetFMrgRxbuf, 2048, 1518},
		{"packed/mergeable-3chains/1518B", virtio.FVersion1 | virtio.FRingPacked | virtio.NetFMrgRxbuf, 600, 1518},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const batch = 32
			var p *pair
			var feed *packedFeed
			if tc.features&virtio.FRingPacked != 0 {
				p, feed = rawPackedPair(b, 256, tc.features|virtio.FEventIdx, tc.buf, true)
			} else {
				p = rawPair(b, 256, tc.features|virtio.FEventIdx, tc.buf, true)
			}
			rx := virtio.NewNetRX(p.q)
			per := (tc.frame + 12 + int(tc.buf) - 1) / int(tc.buf)
			payload := [][]byte{frame(tc.frame)}
			head := uint16(0)
			b.SetBytes(int64(tc.frame))
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n += batch {
				if feed != nil {
					feed.add(batch * per)
				} else {
					for range batch * per {
						p.d.AddHead(head)
						head = (head + 1) % 256
					}
					p.d.Publish()
				}
				for range batch {
					if ok, err := rx.Write(virtio.NetHdr{}, payload); !ok || err != nil {
						b.Fatal("write", ok, err)
					}
				}
				p.q.Publish()
				p.q.NeedNotify()
			}
		})
	}
}

// BenchmarkDirtyLogMark measures marking one frame-sized write.
func BenchmarkDirtyLogMark(b *testing.B) {
	l := virtio.NewDirtyLog(make([]byte, 1<<15))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		l.Mark(uint64(i%100000)*1518, 1518)
	}
}

// packedFeed is the raw driver side of a packed ring for benchmarks: each
// buffer is one descriptor of a fixed slot, rewritten whole (a packed
// driver must: the device overwrote id and len with the used descriptor),
// its flags last.
type packedFeed struct {
	p     *pair
	pos   uint16 // index | wrap<<15
	n     uint32 // buffer length
	write bool
}

// rawPackedPair is rawPair for a packed ring.
func rawPackedPair(t testing.TB, size uint16, features uint64, n uint32, write bool) (*pair, *packedFeed) {
	p := newPair(t, size, features|virtio.FRingPacked, virtiotest.DriverOptions{SlotSize: 2048, Packed: true})
	return p, &packedFeed{p: p, pos: virtiotest.PackedWrap, n: n, write: write}
}

// add makes k buffers available.
func (f *packedFeed) add(k int) {
	size := f.p.d.Size()
	for range k {
		i := f.pos &^ virtiotest.PackedWrap
		gpa, _ := f.p.d.Slot(int(i))
		flags := virtiotest.DescFUsed
		if f.pos&virtiotest.PackedWrap != 0 {
			flags = virtiotest.DescFAvail
		}
		if f.write {
			flags |= virtiotest.DescFWrite
		}
		f.p.d.WritePackedDesc(i, virtiotest.PackedDesc{Addr: gpa, Len: f.n, ID: i, Flags: flags})
		i++
		if i == size {
			f.pos = (f.pos ^ virtiotest.PackedWrap) &^ (virtiotest.PackedWrap - 1)
		} else {
			f.pos = f.pos&virtiotest.PackedWrap | i
		}
	}
}
