package virtio_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// Fuzzed guest memory layout: region A holds the rings (laid out like
// virtiotest.Driver does) and buffers, region B is adjacent to A, region C
// is apart.
const (
	fzA, fzASize = 0x1000, 0x2000
	fzB, fzBSize = 0x3000, 0x1000
	fzC, fzCSize = 0x10000, 0x1000
)

// fuzzBacking is the reused backing of the fuzzed regions (a fuzz
// function runs sequentially within its process).
var fuzzBacking = make([]byte, fzASize+fzBSize+fzCSize)

// fuzzMemory builds the three regions and copies data over A then B.
func fuzzMemory(data []byte) ([]virtio.Region, *virtio.Memory) {
	clear(fuzzBacking)
	a, b, c := fuzzBacking[:fzASize:fzASize], fuzzBacking[fzASize:fzASize+fzBSize:fzASize+fzBSize], fuzzBacking[fzASize+fzBSize:]
	regions := []virtio.Region{
		{GuestPhysAddr: fzA, Size: fzASize, UserAddr: 0x7000_0000, Data: a},
		{GuestPhysAddr: fzB, Size: fzBSize, UserAddr: 0x6000_0000, Data: b},
		{GuestPhysAddr: fzC, Size: fzCSize, UserAddr: 0x5000_0000, Data: c},
	}
	n := copy(regions[0].Data, data)
	copy(regions[1].Data, data[n:])
	m, err := virtio.NewMemory(regions)
	if err != nil {
		panic(err)
	}
	return regions, m
}

// checkSegments fails unless every segment is a view of some region at the
// right place.
func checkSegments(t *testing.T, regions []virtio.Region, segs []virtio.Segment) uint64 {
	t.Helper()
	var total uint64
	for _, s := range segs {
		require.NotEmpty(t, s.Buf)
		require.Equal(t, len(s.Buf), cap(s.Buf))
		found := false
		for _, r := range regions {
			off := s.GPA - r.GuestPhysAddr
			if s.GPA >= r.GuestPhysAddr && off < r.Size && uint64(len(s.Buf)) <= r.Size-off {
				require.True(t, &s.Buf[0] == &r.Data[off], "segment %#x+%d is not the guest memory at its address", s.GPA, len(s.Buf))
				found = true
				break
			}
		}
		require.True(t, found, "segment %#x+%d outside every region", s.GPA, len(s.Buf))
		total += uint64(len(s.Buf))
	}
	return total
}

// fuzzConfig derives the queue configuration from the first bytes. The
// rings are laid out as virtiotest.Driver lays them out at fzA.
func fuzzConfig(ctl []byte) virtio.QueueConfig {
	var c [4]byte
	copy(c[:], ctl)
	features := virtio.FVersion1
	if c[1]&1 != 0 {
		features |= virtio.FIndirectDesc
	}
	if c[1]&2 != 0 {
		features |= virtio.FEventIdx
	}
	if c[1]&4 != 0 {
		features |= virtio.NetFMrgRxbuf
	}
	size := uint64(1) << (c[0] % 5) // 1..16
	avail := fzA + 16*size
	return virtio.QueueConfig{
		Size:      uint16(size),
		DescGPA:   fzA,
		AvailGPA:  avail,
		UsedGPA:   (avail + 6 + 2*size + 3) &^ 3,
		Features:  features,
		LastAvail: binary.LittleEndian.Uint16(c[2:]),
	}
}

// fuzzSeed lays out chains with the driver mock on region A and returns
// the fuzz input (control bytes + region A and B contents).
func fuzzSeed(t testing.TB, size uint16, ctl byte, build func(d *virtiotest.Driver)) []byte {
	mem := make([]byte, fzASize+fzBSize)
	d, err := virtiotest.NewDriver(mem[:fzASize], fzA, size, virtiotest.DriverOptions{})
	require.NoError(t, err)
	cfg := d.Config(0)
	var sz byte
	for 1<<sz != int(size) {
		sz++
	}
	want := fuzzConfig([]byte{sz})
	require.Equal(t, want.AvailGPA, cfg.AvailGPA)
	require.Equal(t, want.UsedGPA, cfg.UsedGPA)
	build(d)
	d.Publish()
	// Rings and the seeds' indirect tables live in the first 0x600 bytes;
	// small inputs mutate faster.
	return append([]byte{sz, ctl, 0, 0}, mem[:0x600]...)
}

func FuzzChainWalk(f *testing.F) {
	in := func(off uint64) uint64 { return fzA + 0x400 + off }
	seeds := []struct {
		size  uint16
		ctl   byte
		build func(d *virtiotest.Driver)
	}{
		{4, 0, func(d *virtiotest.Driver) {
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0), Len: 16}, {GPA: in(16), Len: 32, Write: true}}, false)
		}},
		{8, 3, func(d *virtiotest.Driver) {
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(0), Len: 16}}, false)
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: fzB - 8, Len: 16}, {GPA: fzC, Len: 100, Write: true}}, false)
			_ = d.WriteDescAt(in(0x100), virtiotest.Desc{Addr: in(0), Len: 8, Flags: virtiotest.DescFNext, Next: 1})
			_ = d.WriteDescAt(in(0x110), virtiotest.Desc{Addr: fzB + 8, Len: 8, Flags: virtiotest.DescFWrite})
			d.WriteDesc(7, virtiotest.Desc{Addr: in(0x100), Len: 32, Flags: virtiotest.DescFIndirect})
			d.AddHead(7)
		}},
		{16, 5, func(d *virtiotest.Driver) {
			for i := range 5 {
				_, _ = d.AddElems([]virtiotest.Elem{{GPA: in(uint64(i) * 64), Len: 64, Write: true}}, false)
			}
		}},
		{2, 1, func(d *virtiotest.Driver) {
			d.WriteDesc(0, virtiotest.Desc{Addr: in(0), Len: 1, Flags: virtiotest.DescFNext, Next: 1})
			d.WriteDesc(1, virtiotest.Desc{Addr: in(0), Len: 1, Flags: virtiotest.DescFNext, Next: 0})
			d.AddHead(1)
		}},
	}
	for _, s := range seeds {
		f.Add(fuzzSeed(f, s.size, s.ctl, s.build))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		fuzzChainWalk(t, data)
	})
}

// fuzzChainWalk is the body of FuzzChainWalk, also run by the named
// regression tests. It returns how many chains the transmit-style walk
// popped and the error that broke the queue, if any.
func fuzzChainWalk(t *testing.T, data []byte) (popped int, broken error) {
	cfg := fuzzConfig(data[:4])
	regions, mem := fuzzMemory(data[4:])
	q, err := virtio.NewQueue(mem, cfg)
	require.NoError(t, err)
	var c, slow virtio.Chain
	for range 2*int(cfg.Size) + 2 {
		// The slow path (walk) on the chain Pop is about to read: Pop,
		// fast path or not, must return the same chain or break.
		head, hasHead := fuzzNextHead(q, mem, cfg.AvailGPA)
		var slowErr error
		if hasHead {
			slowErr = q.Walk(&slow, head)
		}
		ok, err := q.Pop(&c)
		if ok && hasHead {
			require.NoError(t, slowErr)
			requireSameChain(t, &slow, &c)
		}
		if err != nil {
			require.ErrorIs(t, err, virtio.ErrBroken)
			require.True(t, errors.Is(err, virtio.ErrBadRing) || errors.Is(err, virtio.ErrBadChain) || errors.Is(err, virtio.ErrOutOfBounds))
			broken = err
			break
		}
		if !ok {
			break
		}
		popped++
		require.Less(t, c.Head, cfg.Size)
		require.Equal(t, uint64(c.OutLen), checkSegments(t, regions, c.Out))
		require.Equal(t, uint64(c.InLen), checkSegments(t, regions, c.In))
		q.WriteIn(&c, 0, []byte("fuzz"))
		require.NoError(t, q.Push(c.Head, c.InLen))
		q.Publish()
		q.NeedNotify()
		q.EnableNotify()
	}
	if broken != nil {
		ok, err := q.Pop(&c)
		require.False(t, ok)
		require.Equal(t, broken, err)
	}

	// The receive path on the same guest state.
	regions, mem = fuzzMemory(data[4:])
	q, err = virtio.NewQueue(mem, cfg)
	require.NoError(t, err)
	q.SetLog(virtio.NewDirtyLog(make([]byte, 8)))
	rx := virtio.NewNetRX(q)
	payload := [][]byte{make([]byte, 60), make([]byte, 1000)}
	for i := range int(cfg.Size) + 1 {
		write := rx.Write
		if i%2 == 1 {
			write = func(_ virtio.NetHdr, p [][]byte) (bool, error) { return rx.WritePlain(p) }
		}
		ok, err := write(virtio.NetHdr{}, payload)
		if err != nil {
			require.ErrorIs(t, err, virtio.ErrBroken)
			break
		}
		if !ok {
			break
		}
	}
	q.Publish()
	_ = regions

	// loggedQueue builds the queue afresh on the fuzzed guest memory, with
	// a dirty log, for the comparisons below.
	loggedQueue := func() (*virtio.Queue, []byte) {
		_, mem := fuzzMemory(data[4:])
		q, err := virtio.NewQueue(mem, cfg)
		require.NoError(t, err)
		log := make([]byte, 8)
		q.SetLog(virtio.NewDirtyLog(log))
		return q, log
	}

	// The batched one-buffer receive path (PeekPlain, PlainFrame or
	// PlainFrameHdr, CommitPlain, as GuestPort.deliver) against
	// WritePlain or Write one frame at a time, on the same guest state:
	// the same frames written and dropped, the same bytes in guest
	// memory, dirty log and position. Every third frame carries a partial
	// checksum header (PlainFrameHdr in the batch, Write alone).
	frames := make([]mergeFrame, int(cfg.Size)+2)
	csum := &virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 14, CsumOffset: 6}
	for i := range frames {
		n := []int{60, 1000, 14, 2000}[i%4]
		frames[i].segs = split(frame(n), n/2+1)
		if i%3 == 1 {
			frames[i].hdr = csum
		}
	}
	var res [2]plainResult
	var after [2]plainRingState
	for i := range 2 {
		q, log := loggedQueue()
		rx := virtio.NewNetRX(q)
		if i == 0 {
			res[i] = writeMergedEach(rx, frames)
		} else {
			res[i], _ = writeHdrBatch(rx, frames, make([]virtio.PlainBuf, 1+int(data[0]>>5)))
		}
		q.Publish()
		after[i] = plainRingState{mem: append([]byte(nil), fuzzBacking...), log: log, lastAvail: q.LastAvail(), broken: q.Err() != nil}
	}
	require.Equal(t, res[0], res[1])
	require.Equal(t, after[0].lastAvail, after[1].lastAvail)
	require.Equal(t, after[0].broken, after[1].broken)
	require.Equal(t, after[0].log, after[1].log)
	require.True(t, string(after[0].mem) == string(after[1].mem), "guest memory differs")

	// The batched transmit path (PopN, PushN, as GuestPort.txOnce)
	// against Pop and Push one chain at a time, on the same guest state:
	// the same chains, errors, bytes in guest memory, dirty log and
	// position.
	var txs [2]batchRun
	for i := range 2 {
		q, log := loggedQueue()
		if data[1]&0x80 != 0 {
			q.DisableNotify()
		}
		cs := make([]virtio.Chain, 1+int(data[0]>>5))
		r := &txs[i]
		for range 2*int(cfg.Size) + 2 {
			var n int
			if i == 0 {
				n, err = popEach(q, cs)
			} else {
				n, err = q.PopN(cs)
			}
			line := fmt.Sprintf("n=%d err=%v", n, err)
			for j := range n {
				line += "; " + chainString(&cs[j])
			}
			r.batches = append(r.batches, line)
			if err != nil || n == 0 {
				break
			}
			if i == 0 {
				err = pushEach(q, cs[:n], 0)
			} else {
				err = q.PushN(cs[:n], 0)
			}
			require.NoError(t, err)
			q.Publish()
			q.NeedNotify()
		}
		r.lastAvail, r.usedIdx = q.LastAvail(), q.UsedIdx()
		if q.Err() != nil {
			r.err = q.Err().Error()
		}
		r.mem = append([]byte(nil), fuzzBacking...)
		r.log = log
	}
	require.Equal(t, txs[0], txs[1])
	return popped, broken
}

// fuzzNextHead returns the head of the next chain q would pop, read from
// the fuzzed avail ring (split rings, the head in range), without touching
// q.
func fuzzNextHead(q *virtio.Queue, mem *virtio.Memory, availGPA uint64) (uint16, bool) {
	if q.Packed() {
		return 0, false
	}
	b, err := mem.Slice(availGPA+4+2*uint64(q.LastAvail()&(q.Size()-1)), 2)
	if err != nil {
		return 0, false
	}
	h := uint16(b[0]) | uint16(b[1])<<8
	return h, h < q.Size()
}

// requireSameChain fails unless a and b name the same buffers.
func requireSameChain(t *testing.T, a, b *virtio.Chain) {
	t.Helper()
	require.Equal(t, a.Head, b.Head)
	require.Equal(t, a.OutLen, b.OutLen)
	require.Equal(t, a.InLen, b.InLen)
	require.Equal(t, len(a.Out), len(b.Out))
	require.Equal(t, len(a.In), len(b.In))
	for _, p := range [][2][]virtio.Segment{{a.Out, b.Out}, {a.In, b.In}} {
		for i := range p[0] {
			require.Equal(t, p[0][i].GPA, p[1][i].GPA)
			require.Equal(t, len(p[0][i].Buf), len(p[1][i].Buf))
			require.Equal(t, cap(p[0][i].Buf), cap(p[1][i].Buf))
			if len(p[0][i].Buf) > 0 {
				require.Same(t, &p[0][i].Buf[0], &p[1][i].Buf[0])
			}
		}
	}
}
