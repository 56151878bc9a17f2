package virtio_test

import (
	"math"
	"sync"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/stretchr/testify/require"
)

// dirtyPages returns the page numbers whose bits are set in bitmap.
func dirtyPages(bitmap []byte) []uint64 {
	var pages []uint64
	for i, b := range bitmap {
		for j := range 8 {
			if b&(1<<j) != 0 {
				pages = append(pages, uint64(i*8+j))
			}
		}
	}
	return pages
}

func TestDirtyLogMark(t *testing.T) {
	for _, tc := range []struct {
		name   string
		gpa, n uint64
		want   []uint64
	}{
		{"nothing", 0x5000, 0, nil},
		{"one byte", 0x5000, 1, []uint64{5}},
		{"last byte of a page", 0x5fff, 1, []uint64{5}},
		{"straddles", 0x5fff, 2, []uint64{5, 6}},
		{"whole word and more", 30 << 12, 40 << 12, seq(30, 70)},
		{"word boundary", 31 << 12, 2 << 12, []uint64{31, 32}},
		{"past the bitmap is clipped", 1020 << 12, 100 << 12, seq(1020, 1024)},
		{"beyond the bitmap", 5000 << 12, 1, nil},
		{"wraps 2^64", math.MaxUint64 - 10, 100, nil},
		{"huge length", 1023 << 12, math.MaxUint64, []uint64{1023}},
		{"everything", 0, math.MaxUint64, seq(0, 1024)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, misalign := range []int{0, 1} {
				backing := make([]byte, 128+misalign)
				bitmap := backing[misalign:] // 1024 pages; misaligned: byte-wise path
				l := virtio.NewDirtyLog(bitmap)
				require.Equal(t, 128, l.Len())
				l.Mark(tc.gpa, tc.n)
				require.Equal(t, tc.want, dirtyPages(bitmap), "misalign %d", misalign)
			}
		})
	}
	t.Run("tail bytes after the last word", func(t *testing.T) {
		bitmap := make([]byte, 7) // one word + 3 tail bytes
		l := virtio.NewDirtyLog(bitmap)
		l.Mark(30<<12, 20<<12)
		require.Equal(t, seq(30, 50), dirtyPages(bitmap))
	})
}

func seq(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func TestDirtyLogConcurrent(t *testing.T) {
	bitmap := make([]byte, 64+3)
	l := virtio.NewDirtyLog(bitmap)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := uint64(g); p < uint64(len(bitmap))*8; p += 4 {
				l.Mark(p<<12, 1)
			}
		}()
	}
	wg.Wait()
	for _, b := range bitmap {
		require.Equal(t, byte(0xff), b, "no bit lost")
	}
}

func TestDirtyLogQueueWrites(t *testing.T) {
	p := newPair(t, 256, virtio.FVersion1|virtio.NetFMrgRxbuf|virtio.FEventIdx)
	// Log used-ring writes at a different address (vhost-user
	// log_guest_addr) to check it is the one used.
	cfg := p.d.Config(virtio.FVersion1 | virtio.NetFMrgRxbuf | virtio.FEventIdx)
	cfg.UsedLogGPA = 0x4000000
	q, err := virtio.NewQueue(p.mem, cfg)
	require.NoError(t, err)
	bitmap := make([]byte, 4096)
	q.SetLog(virtio.NewDirtyLog(bitmap))

	// A 3000-byte frame into two 2048-byte receive buffers.
	h1, err := p.d.AddIn(2048)
	require.NoError(t, err)
	h2, err := p.d.AddIn(2048)
	require.NoError(t, err)
	p.d.Publish()
	rx := virtio.NewNetRX(q)
	ok, err := rx.Write(virtio.NetHdr{}, [][]byte{frame(3000)})
	require.NoError(t, err)
	require.True(t, ok)
	q.Publish()

	var want []uint64
	addPages := func(gpa, n uint64) {
		for pg := gpa >> 12; pg <= (gpa+n-1)>>12; pg++ {
			want = append(want, pg)
		}
	}
	g1, _ := p.d.Slot(slotOf(p, h1))
	g2, _ := p.d.Slot(slotOf(p, h2))
	addPages(g1, 2048)
	addPages(g2, 3012-2048)
	// Used elements 0 and 1 and used->idx, and avail_event written by Pop.
	addPages(cfg.UsedLogGPA, 4+8*2)
	addPages(cfg.UsedLogGPA+4+8*256, 2)
	require.ElementsMatch(t, dedup(want), dirtyPages(bitmap))

	// Logging off: nothing more is marked.
	clear(bitmap)
	q.SetLog(nil)
	_, err = p.d.AddIn(2048)
	require.NoError(t, err)
	p.d.Publish()
	ok, err = rx.Write(virtio.NetHdr{}, [][]byte{frame(10)})
	require.NoError(t, err)
	require.True(t, ok)
	q.Publish()
	q.DisableNotify()
	q.EnableNotify()
	require.Empty(t, dirtyPages(bitmap))

	// Flags writes are logged too.
	q2, err := virtio.NewQueue(p.mem, p.d.Config(virtio.FVersion1))
	require.NoError(t, err)
	q2.SetLog(virtio.NewDirtyLog(bitmap))
	q2.DisableNotify()
	require.Equal(t, []uint64{p.d.UsedGPA() >> 12}, dirtyPages(bitmap))
}

// slotOf finds the buffer slot of the first In buffer of head.
func slotOf(p *pair, head uint16) int {
	n, _ := p.d.Slots()
	gpa := p.d.ReadDesc(head).Addr
	for i := range n {
		if g, _ := p.d.Slot(i); g == gpa {
			return i
		}
	}
	return -1
}

func dedup(s []uint64) []uint64 {
	seen := map[uint64]bool{}
	var out []uint64
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
