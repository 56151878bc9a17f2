package virtio_test

import (
	"encoding/binary"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// Named regression inputs for the chain walker, run through the
// FuzzChainWalk body. Each is a hostile layout found while building or
// fuzzing the walker; keep every new fuzz crasher here as well.

// fuzzInput builds a FuzzChainWalk input: control bytes, then regions A and
// B written by build through a driver on A.
func fuzzInput(t *testing.T, sizeLog2, ctl byte, lastAvail uint16, build func(d *virtiotest.Driver, ab []byte)) []byte {
	t.Helper()
	mem := make([]byte, fzASize+fzBSize)
	d, err := virtiotest.NewDriver(mem[:fzASize], fzA, 1<<sizeLog2, virtiotest.DriverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Config(0)
	build(d, mem)
	out := []byte{sizeLog2, ctl, 0, 0}
	binary.LittleEndian.PutUint16(out[2:], lastAvail)
	return append(out, mem...)
}

func putRawDesc(b []byte, d virtiotest.Desc) {
	binary.LittleEndian.PutUint64(b, d.Addr)
	binary.LittleEndian.PutUint32(b[8:], d.Len)
	binary.LittleEndian.PutUint16(b[12:], d.Flags)
	binary.LittleEndian.PutUint16(b[14:], d.Next)
}

func TestRegressionChainWalk(t *testing.T) {
	const indirect, eventIdx, mrg = 1, 2, 4
	endA := uint64(fzA + fzASize)
	for _, tc := range []struct {
		name   string
		in     []byte
		popped int
		want   error // nil: not broken
	}{
		{"indirect table across regions with a loop", fuzzInput(t, 2, indirect, 0, func(d *virtiotest.Driver, ab []byte) {
			putRawDesc(ab[endA-16-fzA:], virtiotest.Desc{Addr: fzC, Len: 8, Flags: virtiotest.DescFNext, Next: 1})
			putRawDesc(ab[endA-fzA:], virtiotest.Desc{Addr: fzC, Len: 8, Flags: virtiotest.DescFNext, Next: 0})
			d.WriteDesc(0, virtiotest.Desc{Addr: endA - 16, Len: 32, Flags: virtiotest.DescFIndirect})
			d.AddHead(0)
			d.Publish()
		}), 0, virtio.ErrBadChain},
		{"indirect table across regions, valid", fuzzInput(t, 2, indirect, 0, func(d *virtiotest.Driver, ab []byte) {
			putRawDesc(ab[endA-16-fzA:], virtiotest.Desc{Addr: fzC, Len: 8, Flags: virtiotest.DescFNext, Next: 1})
			putRawDesc(ab[endA-fzA:], virtiotest.Desc{Addr: endA - 4, Len: 8, Flags: virtiotest.DescFWrite})
			d.WriteDesc(0, virtiotest.Desc{Addr: endA - 16, Len: 32, Flags: virtiotest.DescFIndirect})
			d.AddHead(0)
			d.Publish()
		}), 1, nil},
		{"buffer of 4 GiB-1 from the last byte of A", fuzzInput(t, 1, 0, 0, func(d *virtiotest.Driver, _ []byte) {
			d.WriteDesc(1, virtiotest.Desc{Addr: endA - 1, Len: 0xffffffff})
			d.AddHead(1)
			d.Publish()
		}), 0, virtio.ErrOutOfBounds},
		{"avail index wrapping from 0xffff", fuzzInput(t, 3, eventIdx, 0xffff, func(d *virtiotest.Driver, _ []byte) {
			d.WriteDesc(5, virtiotest.Desc{Addr: fzC, Len: 100, Flags: virtiotest.DescFWrite})
			d.SetAvailEntry(0xffff, 5)
			d.SetAvailEntry(0, 5)
			d.SetAvailIdx(1)
		}), 2, nil},
		{"indirect table of exactly queue size entries", fuzzInput(t, 3, indirect|mrg, 0, func(d *virtiotest.Driver, ab []byte) {
			for i := range 8 {
				putRawDesc(ab[0x400+16*i:], virtiotest.Desc{Addr: fzC + uint64(i)*16, Len: 16, Flags: virtiotest.DescFWrite | virtiotest.DescFNext, Next: uint16(i + 1)})
			}
			putRawDesc(ab[0x400+16*7:], virtiotest.Desc{Addr: fzC, Len: 16, Flags: virtiotest.DescFWrite})
			d.WriteDesc(0, virtiotest.Desc{Addr: fzA + 0x400, Len: 128, Flags: virtiotest.DescFIndirect})
			d.AddHead(0)
			d.AddHead(0)
			d.Publish()
		}), 2, nil},
		{"zero-length receive chains", fuzzInput(t, 2, mrg, 0, func(d *virtiotest.Driver, _ []byte) {
			for i := range uint16(4) {
				d.WriteDesc(i, virtiotest.Desc{Addr: fzC, Len: 0, Flags: virtiotest.DescFWrite})
				d.AddHead(i)
			}
			d.Publish()
		}), 4, nil},
		{"queue of size 1 wrapping", fuzzInput(t, 0, eventIdx|mrg, 0xfffe, func(d *virtiotest.Driver, _ []byte) {
			d.WriteDesc(0, virtiotest.Desc{Addr: fzC, Len: 4096, Flags: virtiotest.DescFWrite})
			d.SetAvailEntry(0, 0)
			d.SetAvailIdx(0xffff)
		}), 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			popped, err := fuzzChainWalk(t, tc.in)
			require.Equal(t, tc.popped, popped)
			if tc.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}
}

// TestRegressionPlainBatchOverUsedRing: a receive buffer over the split
// rings (the driver's own memory, a hostile layout). The batched receive
// path reads every chain before it writes the frames and stores the used
// elements after them; WritePlain reads each chain after the frame before
// it and stores each used element right after its frame. The paths must
// still leave the same guest memory (fuzzChainWalk compares them), with and
// without EVENT_IDX: PeekPlain leaves such a buffer to WritePlain. All but
// the avail_event case failed before it did.
func TestRegressionPlainBatchOverUsedRing(t *testing.T) {
	// Size 4: descriptors at fzA, the avail ring at +0x40, the used ring
	// at +0x50 (flags, idx, 4 elements from +0x54, avail_event at +0x74).
	for _, tc := range []struct {
		name string
		ctl  byte
		gpa  uint64
	}{
		{"over the used elements", 0, fzA + 0x54},
		{"over the used ring, event index", 2, fzA + 0x50},
		{"over avail_event", 2, fzA + 0x70},
		{"over the descriptor table", 0, fzA + 0x20},
		{"over the avail ring", 0, fzA + 0x40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := fuzzInput(t, 2, tc.ctl, 0, func(d *virtiotest.Driver, _ []byte) {
				// Buffers large enough for every frame fuzzChainWalk
				// writes (60, 1000, 14 and 2000 bytes), so that they go
				// in one batch; the second is over the rings.
				for _, b := range []struct{ gpa, n uint64 }{{fzA + 0x900, 0x800}, {tc.gpa, 0x800}, {fzA + 0x1100, 0x800}, {fzA + 0x1900, 0x700}} {
					_, err := d.AddElems([]virtiotest.Elem{{GPA: b.gpa, Len: uint32(b.n), Write: true}}, false)
					require.NoError(t, err)
				}
				d.Publish()
			})
			in[0] = 0xe3 // size 4 (0xe3 % 5 == 2), batches of 8 (1 + 0xe3>>5)
			fuzzChainWalk(t, in)
		})
	}
}
