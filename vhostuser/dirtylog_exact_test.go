package vhostuser_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// Issue 16: the dirty log against the writes the backend made. While
// VHOST_F_LOG_ALL is on, "the back-end must log all modifications of the
// guest memory" into the log area of SET_LOG_BASE: the buffers it writes
// and, for rings with VHOST_VRING_F_LOG, the used ring at log_guest_addr
// (QEMU docs/interop/vhost-user.rst, "Migration", "Dirty pages logging").
// Each frame echoed here is written by the backend into one receive chain
// (the used element says which and how many bytes) and the transmit chain
// it came from is pushed back: the test computes the pages those writes
// touch from the rings themselves and requires the bitmap to hold exactly
// them: every written page, and no other page than the used rings'
// avail_event (which the backend writes when it re-arms notifications).

// usedWrites returns the guest ranges the device wrote in d's used ring
// for the elements from index from to the current used index: each
// element and the used index; and the ranges of the buffers of the chains
// those elements name (len bytes from the head, following NEXT), when
// bufs is set.
type gpaRange struct{ gpa, n uint64 }

func usedWrites(d *virtiotest.Driver, from uint16, bufs bool) (out []gpaRange, to uint16) {
	to = d.UsedIdx()
	used := d.UsedGPA()
	off := used - d.MemGPA()
	out = append(out, gpaRange{used + 2, 2})
	for i := from; i != to; i++ {
		slot := uint64(i % d.Size())
		out = append(out, gpaRange{used + 4 + 8*slot, 8})
		if !bufs {
			continue
		}
		e := d.Mem()[off+4+8*slot:]
		id, n := binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])
		for desc := d.ReadDesc(uint16(id)); n > 0; desc = d.ReadDesc(desc.Next) {
			k := min(n, desc.Len)
			out = append(out, gpaRange{desc.Addr, uint64(k)})
			n -= k
			if desc.Flags&virtiotest.DescFNext == 0 {
				break
			}
		}
	}
	return out, to
}

// pagesOf adds the 4 KiB pages of the ranges to set.
func pagesOf(set map[uint64]bool, rs []gpaRange) {
	for _, r := range rs {
		for p := r.gpa >> virtio.LogPageShift; p <= (r.gpa+r.n-1)>>virtio.LogPageShift; p++ {
			set[p] = true
		}
	}
}

// marked returns the pages set in a bitmap.
func marked(bm []byte) map[uint64]bool {
	out := map[uint64]bool{}
	for i, b := range bm {
		for j := 0; j < 8; j++ {
			if b&(1<<j) != 0 {
				out[uint64(i)*8+uint64(j)] = true
			}
		}
	}
	return out
}

// dirtyRig echoes frames and tracks what the backend wrote.
type dirtyRig struct {
	t      *testing.T
	f      *vhostusertest.Frontend
	rx, tx *virtiotest.Driver
	rxAt   uint16
	txAt   uint16
	seed   byte
}

// echo sends n frames of assorted sizes, one at a time, and returns the
// pages the backend's writes touched (want) and the pages it may also
// mark (the used rings' avail_event).
func (r *dirtyRig) echo(n int) (want, may map[uint64]bool) {
	t := r.t
	want, may = map[uint64]bool{}, map[uint64]bool{}
	for i := 0; i < n; i++ {
		r.seed++
		fr := frame(60+(int(r.seed)*577)%1454, r.seed)
		require.NoError(t, r.f.SendFrame(0, virtio.NetHdr{}, fr, vhostusertest.LayoutSplit))
		eventually(t, "frame echoed and transmit chain used", func() bool {
			return r.rx.UsedIdx() != r.rxAt && r.tx.UsedIdx() != r.txAt
		})
		var rs []gpaRange
		rs, r.rxAt = usedWrites(r.rx, r.rxAt, true)
		pagesOf(want, rs)
		rs, r.txAt = usedWrites(r.tx, r.txAt, false)
		pagesOf(want, rs)
		got, err := r.f.WaitRecv()
		require.NoError(t, err)
		require.True(t, bytes.Equal(fr, got))
		require.True(t, r.f.TxDone(0))
	}
	for _, d := range []*virtiotest.Driver{r.rx, r.tx} {
		pagesOf(may, []gpaRange{{d.UsedGPA() + 4 + 8*uint64(d.Size()), 2}})
	}
	return want, may
}

// requireExact checks that bm marks every page of want and nothing but
// want and may.
func requireExact(t *testing.T, bm []byte, want, may map[uint64]bool) {
	t.Helper()
	got := marked(bm)
	for p := range want {
		require.True(t, got[p], "page %#x written but not logged", p<<virtio.LogPageShift)
	}
	for p := range got {
		require.True(t, want[p] || may[p], "page %#x logged but not written", p<<virtio.LogPageShift)
	}
}

func TestDirtyLogMatchesWrites(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := started(t, h, vhostusertest.Options{Regions: 2, RegionSize: 4 << 20}, 1, 64)
	r := &dirtyRig{t: t, f: f, rx: f.Ring(0).Driver, tx: f.Ring(1).Driver}
	r.rxAt, r.txAt = r.rx.UsedIdx(), r.tx.UsedIdx()
	// Nothing is logged before LOG_ALL.
	bm1, err := f.SetLogBase(256) // 8 MiB: 2048 pages
	require.NoError(t, err)
	r.echo(4)
	require.Empty(t, marked(bm1), "logging is off")

	// QEMU's order when migration starts (hw/virtio/vhost.c
	// vhost_migration_log -> vhost_dev_set_log): SET_FEATURES with
	// LOG_ALL, then SET_VRING_ADDR with VHOST_VRING_F_LOG per ring.
	require.NoError(t, f.SetFeatures(f.Features()|vhostuser.FLogAll))
	for i := 0; i < 2; i++ {
		require.NoError(t, f.SetVringAddr(i, true, 0))
	}
	want, may := r.echo(12)
	requireExact(t, bm1, want, may)
	require.Greater(t, len(want), 3, "receive buffers on more than one page")

	// A resized log while logging (QEMU: vhost_log_resize on memory
	// hotplug, SET_LOG_BASE with the new area): the new area gets every
	// later write, the old one none. Cleared only once SET_LOG_BASE is
	// answered: the backend pauses the rings around the swap, so a mark
	// of the last echo still in flight (a worker between its used index
	// store and the mark) lands before the reply, never after it.
	bm2, err := f.SetLogBase(512)
	require.NoError(t, err)
	clear(bm1)
	want, may = r.echo(12)
	requireExact(t, bm2, want, may)
	require.Empty(t, marked(bm1), "the old log area is not written after SET_LOG_BASE")

	// LOG_ALL off (migration cancelled or done): nothing is logged; on
	// again on the same area: logged again.
	require.NoError(t, f.SetFeatures(f.Features()&^vhostuser.FLogAll))
	// SET_FEATURES does not pause the rings: a mark of the last echo may
	// still be in flight. One more echo first: the echo device publishes
	// both rings from one worker, which finished the earlier publishes
	// (marks included) before it took this frame.
	r.echo(1)
	clear(bm2)
	r.echo(6)
	require.Empty(t, marked(bm2), "LOG_ALL off")
	require.NoError(t, f.SetFeatures(f.Features()|vhostuser.FLogAll))
	want, may = r.echo(6)
	requireExact(t, bm2, want, may)

	// The figure: pages marked per second of receive traffic (one frame
	// in flight at a time: this measures the logging, not the speed).
	clear(bm2)
	t0 := time.Now()
	want, _ = r.echo(64)
	el := time.Since(t0)
	t.Logf("dirty log: 64 frames (60..1513 B, 2 KiB receive buffers) in %v marked %d distinct pages (%d in the bitmap); %.0f frames/s, %.0f distinct pages/s",
		el.Round(time.Millisecond), len(want), len(marked(bm2)), 64/el.Seconds(), float64(len(want))/el.Seconds())
}
