//go:build linux

package vhostuser

import (
	"bytes"
	"errors"
	"math/bits"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// fuzzFDs makes n fds of the kinds in kinds (2 bits each: eventfd, memfd
// of 64 KiB, /dev/null, pipe read end).
func fuzzFDs(t testing.TB, n int, kinds uint32) []int {
	initPoller()
	var fds []int
	for i := 0; i < n; i++ {
		var fd int
		var err error
		switch (kinds >> (2 * (i % 16))) & 3 {
		case 0:
			fd, err = unix.Eventfd(0, unix.EFD_CLOEXEC)
		case 1:
			if fd, err = unix.MemfdCreate("fuzz", unix.MFD_CLOEXEC); err == nil {
				err = unix.Ftruncate(fd, 64<<10)
			}
		case 2:
			fd, err = unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
		case 3:
			var p [2]int
			if err = unix.Pipe2(p[:], unix.O_CLOEXEC); err == nil {
				_ = unix.Close(p[1])
				fd = p[0]
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	return fds
}

// requireClosed fails unless every fd in fds is closed.
func requireClosed(t testing.TB, fds []int) {
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Fatalf("fd %d left open", fd)
		}
	}
}

// validSession is a seed: negotiation, a one-region memory table (the fd
// is the memfd delivered at memAt) and ring 1 of 8 entries at the start of
// it, started by a kick whose eventfd is delivered at kickAt.
func validSession() (data []byte, memAt, kickAt int) {
	var b []byte
	b = append(b, msg(ReqGetFeatures, 0, nil)...)
	b = append(b, msg(ReqGetProtocolFeatures, 0, nil)...)
	b = append(b, msg(ReqSetProtocolFeatures, 0, u64b(DefaultProtocolFeatures))...)
	b = append(b, msg(ReqSetOwner, 0, nil)...)
	b = append(b, msg(ReqSetFeatures, flagNeedReply, u64b(DefaultFeatures&^(FLogAll|virtio.NetFMQ)))...)
	memAt = len(b)
	b = append(b, msg(ReqSetMemTable, flagNeedReply, memTableBytes(memRegion{GPA: 0x10000, Size: 64 << 10, UVA: 0x7000_0000}))...)
	b = append(b, msg(ReqSetVringNum, 0, stateb(1, 8))...)
	b = append(b, msg(ReqSetVringBase, 0, stateb(1, 0))...)
	b = append(b, msg(ReqSetVringAddr, 0, vringAddrBytes(vringAddr{Index: 1, Desc: 0x7000_0000, Avail: 0x7000_0100, Used: 0x7000_0200}))...)
	kickAt = len(b)
	b = append(b, msg(ReqSetVringKick, 0, u64b(1))...)
	b = append(b, msg(ReqSetVringEnable, 0, stateb(1, 1))...)
	b = append(b, msg(ReqGetVringBase, 0, stateb(1, 0))...)
	b = append(b, msg(ReqSetVringKick, 0, u64b(0|vringNoFD))...)
	b = append(b, msg(ReqGetConfig, 0, configPayload(0, NetConfigSize, 0, nil))...)
	b = append(b, msg(ReqSetConfig, flagNeedReply, configPayload(0, 6, 0, []byte{2, 0, 0, 0, 0, 2}))...)
	b = append(b, msg(ReqResetOwner, 0, nil)...)
	return b, memAt, kickAt
}

// FuzzDecodeMessage feeds arbitrary bytes, with up to 11 fds of assorted
// kinds delivered in two batches at arbitrary offsets, to a whole session
// (decoder, dispatcher, every handler). It must never panic, must leave the
// device stopped and closed, and must close every fd it received.
func FuzzDecodeMessage(f *testing.F) {
	data, memAt, kickAt := validSession()
	f.Add(data, uint8(0), uint32(0), uint8(0), uint16(0), uint16(0), uint8(0))
	// The memfd with SET_MEM_TABLE, the eventfd with SET_VRING_KICK.
	f.Add(data, uint8(2), uint32(0b0001), uint8(1), uint16(memAt), uint16(kickAt), uint8(0))
	f.Add(data, uint8(2), uint32(0b0001), uint8(1), uint16(memAt), uint16(kickAt), uint8(5))
	f.Add(msg(ReqSetMemTable, 0, memTableBytes(memRegion{Size: 4096}, memRegion{GPA: 4096, Size: 4096, UVA: 4096})), uint8(2), uint32(0b0101), uint8(2), uint16(0), uint16(0), uint8(0))
	f.Add(msg(ReqSetVringCall, flagNeedReply, u64b(0)), uint8(1), uint32(3), uint8(1), uint16(0), uint16(0), uint8(1))
	f.Add(putHeader(ReqSetFeatures, 1, 0xffffffff), uint8(9), uint32(0), uint8(9), uint16(0), uint16(0), uint8(0))
	f.Add([]byte{}, uint8(0), uint32(0), uint8(0), uint16(0), uint16(0), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, nfds uint8, kinds uint32, split uint8, at1, at2 uint16, chunk uint8) {
		if len(data) >= headerSize {
			if h, err := decodeHeader(data); err == nil {
				if !bytes.Equal(putHeader(h.Request, h.Flags, h.Size), data[:headerSize]) {
					t.Fatal("header does not round-trip")
				}
			}
		}
		fds := fuzzFDs(t, int(nfds%12), kinds)
		k := min(int(split), len(fds))
		c := &splitConn{fakeConn: fakeConn{in: data, chunk: int(chunk % 64)}}
		c.batches = []fdBatch{{int(at1), fds[:k]}, {max(int(at1), int(at2)), fds[k:]}}
		s, d := testSession(t, Options{QueuePairs: 2}, c)
		err := s.serve()
		c.closeUndelivered()
		if !d.closed || len(d.running) != 0 {
			t.Fatalf("device not stopped and closed: %v %v", d.closed, d.running)
		}
		if err == nil && len(c.in) != 0 {
			t.Fatal("clean end before the input was consumed")
		}
		if err != nil && !isSessionError(err) {
			t.Fatalf("unexpected error class: %v", err)
		}
		requireClosed(t, fds)
	})
}

func isSessionError(err error) bool {
	for _, e := range []error{ErrBadHeader, ErrBadSize, ErrBadFDs, ErrUnknownRequest, ErrNotNegotiated, ErrInvalid, ErrBadMemory, ErrBadRing} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// splitConn is a fakeConn that delivers batches of fds with the read at
// their byte offset; no read crosses such an offset (a stream socket does
// not merge data sent with and without SCM_RIGHTS).
type splitConn struct {
	fakeConn
	pos     int
	batches []fdBatch
}

type fdBatch struct {
	at  int
	fds []int
}

func (c *splitConn) ReadMsgUnix(b, oob []byte) (n, oobn, flags int, addr *net.UnixAddr, err error) {
	for len(c.batches) > 0 && c.batches[0].at <= c.pos {
		c.fakeConn.fds = append(c.fakeConn.fds, c.batches[0].fds...)
		c.batches = c.batches[1:]
	}
	if len(c.batches) > 0 && c.pos+len(b) > c.batches[0].at {
		b = b[:c.batches[0].at-c.pos]
	}
	n, oobn, flags, addr, err = c.fakeConn.ReadMsgUnix(b, oob)
	c.pos += n
	return n, oobn, flags, addr, err
}

// closeUndelivered closes the fds the session never read.
func (c *splitConn) closeUndelivered() {
	for _, b := range c.batches {
		for _, fd := range b.fds {
			_ = unix.Close(fd)
		}
	}
	for _, fd := range c.fakeConn.fds {
		_ = unix.Close(fd)
	}
}

// FuzzMemoryTable: arbitrary SET_MEM_TABLE payloads, mapped from memfds of
// an arbitrary size. The decoder round-trips; a table is either refused
// with a memory or size error, or every byte of every region it maps is
// backed by its file (touching them must not fault).
func FuzzMemoryTable(f *testing.F) {
	f.Add(memTableBytes(memRegion{GPA: 0, Size: 1 << 20, UVA: 1 << 40}), uint32(1<<20), uint8(1))
	f.Add(memTableBytes(memRegion{GPA: 0, Size: 1 << 20, UVA: 1 << 40, MmapOffset: 4096}), uint32(1<<20), uint8(1))
	f.Add(memTableBytes(memRegion{GPA: 0, Size: 8192, UVA: 1 << 40, MmapOffset: 100}), uint32(1<<20), uint8(1))
	f.Add(memTableBytes(memRegion{GPA: 0, Size: 1 << 20, UVA: 1 << 40}, memRegion{GPA: 1 << 20, Size: 1 << 20, UVA: 1 << 41}), uint32(1<<20), uint8(2))
	f.Add(memTableBytes(memRegion{GPA: 0, Size: 1 << 20, UVA: 0}, memRegion{GPA: 4096, Size: 4096, UVA: 1 << 30}), uint32(1<<20), uint8(2))
	f.Add(memTableBytes(memRegion{GPA: ^uint64(0) - 10, Size: 100}), uint32(4096), uint8(1))
	f.Add(memTableBytes(memRegion{Size: 0}), uint32(4096), uint8(1))
	f.Add(memTableBytes(memRegion{Size: 4096, MmapOffset: ^uint64(0) - 100}), uint32(4096), uint8(1))
	f.Fuzz(func(t *testing.T, payload []byte, fileSize uint32, nfds uint8) {
		tab, err := decodeMemTable(payload)
		if err != nil {
			if !errors.Is(err, ErrBadSize) && !errors.Is(err, ErrBadMemory) {
				t.Fatalf("decode error class: %v", err)
			}
		} else {
			// Round trip, but for the padding after the region count.
			want := bytes.Clone(payload)
			clear(want[4:8])
			if !bytes.Equal(memTableBytes(tab.Regions[:tab.N]...), want) {
				t.Fatal("memory table does not round-trip")
			}
		}
		size := int64(fileSize % (4 << 20))
		initPoller()
		var fds []int
		for i := 0; i < int(nfds%9); i++ {
			fd, err := unix.MemfdCreate("fuzz", unix.MFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Ftruncate(fd, size); err != nil {
				t.Fatal(err)
			}
			fds = append(fds, fd)
		}
		c := &fakeConn{in: msg(ReqSetMemTable, 0, payload), fds: fds}
		s, _ := testSession(t, Options{}, c)
		err = s.loop()
		switch {
		case errors.Is(err, errCleanEOF) && tableTotal(tab) > DefaultMaxMemory:
			// Above the server's limit (Options.MaxMemory): refused with
			// ErrMemoryLimit, which does not end the session; nothing is
			// mapped and nothing counted against the limit.
			if s.mem != nil || len(s.regions) != 0 || s.cfg.budget.used.Load() != 0 {
				t.Fatalf("table above the server's limit: %d regions mapped, %d bytes counted", len(s.regions), s.cfg.budget.used.Load())
			}
		case errors.Is(err, errCleanEOF):
			// Accepted: every mapped byte must be backed by the file.
			if s.mem == nil || len(s.regions) != tab.N {
				t.Fatalf("table accepted but %d regions mapped", len(s.regions))
			}
			for _, r := range s.regions {
				if uint64(len(r.Data)) != r.Size {
					t.Fatal("mapping size")
				}
				_ = r.Data[0] + r.Data[len(r.Data)-1]
				r.Data[len(r.Data)-1] = r.Data[0]
			}
		case errors.Is(err, ErrBadSize), errors.Is(err, ErrBadMemory), errors.Is(err, ErrBadFDs):
		default:
			t.Fatalf("unexpected result: %v", err)
		}
		s.teardown()
		if used := s.cfg.budget.used.Load(); used != 0 {
			t.Fatalf("%d bytes of the server's memory limit still counted after teardown", used)
		}
		requireClosed(t, fds)
	})
}

// tableTotal is the sum of the region sizes of tab (saturating).
func tableTotal(tab memTable) uint64 {
	var total uint64
	for _, r := range tab.Regions[:tab.N] {
		t, c := bits.Add64(total, r.Size, 0)
		if c != 0 {
			return ^uint64(0)
		}
		total = t
	}
	return total
}

// TestFuzzSeedSession checks that the fuzz seed really is a valid session
// that starts a ring, so the fuzzer starts from deep inside the state
// machine.
func TestFuzzSeedSession(t *testing.T) {
	data, memAt, kickAt := validSession()
	fds := fuzzFDs(t, 2, 0b0001)
	c := &splitConn{fakeConn: fakeConn{in: data, chunk: 7}}
	c.batches = []fdBatch{{memAt, fds[:1]}, {kickAt, fds[1:]}}
	s, d := testSession(t, Options{}, c)
	started := 0
	d.onStart = func(int) { started++ }
	if err := s.serve(); err != nil {
		t.Fatal(err)
	}
	if started != 1 {
		t.Fatalf("%d rings started", started)
	}
	requireClosed(t, fds)
	// Replies: GET_FEATURES, GET_PROTOCOL_FEATURES, the two acks,
	// GET_VRING_BASE, GET_CONFIG and the nack of SET_CONFIG (mac is
	// read-only for a modern driver).
	out := c.out.Bytes()
	var got []Request
	for len(out) >= headerSize {
		got = append(got, Request(ne.Uint32(out)))
		out = out[headerSize+int(ne.Uint32(out[8:])):]
	}
	want := []Request{ReqGetFeatures, ReqGetProtocolFeatures, ReqSetFeatures, ReqSetMemTable, ReqGetVringBase, ReqGetConfig, ReqSetConfig}
	if len(got) != len(want) {
		t.Fatalf("replies %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("replies %v, want %v", got, want)
		}
	}
}

// TestTruncatedFDs: more fds than the control buffer holds; the kernel
// (here fakeConn, as the kernel) closes the rest and sets MSG_CTRUNC, the
// session closes what it got and fails.
func TestTruncatedFDs(t *testing.T) {
	fds := fuzzFDs(t, 40, 0)
	c := &fakeConn{in: msg(ReqSetMemTable, 0, memTableBytes(memRegion{Size: 4096})), fds: fds}
	s, _ := testSession(t, Options{}, c)
	require.ErrorIs(t, s.serve(), ErrBadFDs)
	requireClosed(t, fds)
}
