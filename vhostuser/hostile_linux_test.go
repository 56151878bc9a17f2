//go:build linux

package vhostuser_test

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

var ne = binary.NativeEndian

// reg is one region of a hand-made memory table.
type reg struct{ gpa, size, uva, off uint64 }

func regionBytes(b []byte, r reg) {
	ne.PutUint64(b[0:], r.gpa)
	ne.PutUint64(b[8:], r.size)
	ne.PutUint64(b[16:], r.uva)
	ne.PutUint64(b[24:], r.off)
}

func memTable(n uint32, rs ...reg) []byte {
	b := make([]byte, 8+32*len(rs))
	ne.PutUint32(b, n)
	for i, r := range rs {
		regionBytes(b[8+32*i:], r)
	}
	return b
}

func memReg(r reg) []byte {
	b := make([]byte, 40)
	regionBytes(b[8:], r)
	return b
}

func state(idx, num uint32) []byte {
	b := make([]byte, 8)
	ne.PutUint32(b, idx)
	ne.PutUint32(b[4:], num)
	return b
}

func vringAddr(idx, flags uint32, desc, used, avail, log uint64) []byte {
	b := make([]byte, 40)
	ne.PutUint32(b[0:], idx)
	ne.PutUint32(b[4:], flags)
	ne.PutUint64(b[8:], desc)
	ne.PutUint64(b[16:], used)
	ne.PutUint64(b[24:], avail)
	ne.PutUint64(b[32:], log)
	return b
}

// memfd returns a memfd of size bytes that the test closes.
func memfd(t *testing.T, size int64) int {
	t.Helper()
	fd, err := unix.MemfdCreate("hostile", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	require.NoError(t, unix.Ftruncate(fd, size))
	t.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

func eventfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	require.NoError(t, err)
	t.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

const (
	need = 0x8 // need_reply
	mib  = 1 << 20
	uva0 = 0x7f00_0000_0000 // the frontend's user address of region 0
)

// hostileCase prepares a session (prep) and sends one bad message (send);
// the session must end with want.
type hostileCase struct {
	name string
	prep func(t *testing.T, f *vhostusertest.Frontend)
	send func(t *testing.T, f *vhostusertest.Frontend) error
	want error
}

func negotiated(t *testing.T, f *vhostusertest.Frontend) { require.NoError(t, f.Negotiate(0)) }

func withMemory(t *testing.T, f *vhostusertest.Frontend) {
	negotiated(t, f)
	require.NoError(t, f.SendMemory())
}

func withRings(t *testing.T, f *vhostusertest.Frontend) {
	negotiated(t, f)
	require.NoError(t, f.SetupQueues(1, 64))
}

func raw(req vhostuser.Request, payload []byte, fds ...int) func(*testing.T, *vhostusertest.Frontend) error {
	return func(_ *testing.T, f *vhostusertest.Frontend) error { return f.WriteMessage(req, need, payload, fds...) }
}

func hostileCases() []hostileCase {
	hdr := func(req, flags, size uint32) []byte {
		b := make([]byte, 12)
		ne.PutUint32(b, req)
		ne.PutUint32(b[4:], flags)
		ne.PutUint32(b[8:], size)
		return b
	}
	rawBytes := func(b []byte) func(*testing.T, *vhostusertest.Frontend) error {
		return func(_ *testing.T, f *vhostusertest.Frontend) error { return f.WriteRaw(b) }
	}
	withFD := func(size int64, mk func(fd int) []byte, req vhostuser.Request) func(*testing.T, *vhostusertest.Frontend) error {
		return func(t *testing.T, f *vhostusertest.Frontend) error {
			fd := memfd(t, size)
			return f.WriteMessage(req, need, mk(fd), fd)
		}
	}
	table2 := func(a, b reg) func(*testing.T, *vhostusertest.Frontend) error {
		return func(t *testing.T, f *vhostusertest.Frontend) error {
			fa, fb := memfd(t, int64(a.off+a.size)), memfd(t, int64(b.off+b.size))
			return f.WriteMessage(vhostuser.ReqSetMemTable, need, memTable(2, a, b), fa, fb)
		}
	}
	table1 := func(r reg, fileSize int64) func(*testing.T, *vhostusertest.Frontend) error {
		return withFD(fileSize, func(int) []byte { return memTable(1, r) }, vhostuser.ReqSetMemTable)
	}
	kick := func(v uint64, fds ...int) func(*testing.T, *vhostusertest.Frontend) error {
		return func(_ *testing.T, f *vhostusertest.Frontend) error {
			return f.WriteMessage(vhostuser.ReqSetVringKick, need, u64le(v), fds...)
		}
	}
	ringAt := func(desc, used, avail uint64) func(*testing.T, *vhostusertest.Frontend) error {
		return func(t *testing.T, f *vhostusertest.Frontend) error {
			_, err := f.Request(vhostuser.ReqSetVringNum, false, state(0, 64))
			require.NoError(t, err)
			require.NoError(t, f.WriteMessage(vhostuser.ReqSetVringAddr, need, vringAddr(0, 0, desc, used, avail, 0)))
			return f.WriteMessage(vhostuser.ReqSetVringKick, need, u64le(0), eventfd(t))
		}
	}
	noProto := func(p uint64) func(*testing.T, *vhostusertest.Frontend) {
		return func(t *testing.T, f *vhostusertest.Frontend) {
			_, err := f.GetFeatures()
			require.NoError(t, err)
			require.NoError(t, f.SetProtocolFeatures(p))
		}
	}
	return []hostileCase{
		// Header.
		{"version 0", nil, rawBytes(hdr(1, 0, 0)), vhostuser.ErrBadHeader},
		{"version 2", nil, rawBytes(hdr(1, 2, 0)), vhostuser.ErrBadHeader},
		{"reply flag on a request", nil, rawBytes(hdr(1, 1|4, 0)), vhostuser.ErrBadHeader},
		{"unknown flag", nil, rawBytes(hdr(1, 1|0x100, 0)), vhostuser.ErrBadHeader},
		{"huge payload", nil, rawBytes(hdr(2, 1, 1<<31)), vhostuser.ErrBadSize},
		{"truncated payload", nil, func(_ *testing.T, f *vhostusertest.Frontend) error {
			if err := f.WriteRaw(append(hdr(2, 1, 8), 1, 2, 3, 4)); err != nil {
				return err
			}
			return f.Conn().CloseWrite()
		}, vhostuser.ErrBadHeader},
		{"garbage", nil, rawBytes([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), vhostuser.ErrBadHeader},
		// Table.
		{"unknown request 99", negotiated, raw(99, nil), vhostuser.ErrUnknownRequest},
		{"unknown request 0", negotiated, raw(0, nil), vhostuser.ErrUnknownRequest},
		{"unknown request 2^32-1", negotiated, raw(0xffffffff, nil), vhostuser.ErrUnknownRequest},
		{"SET_SLAVE_REQ_FD not offered", negotiated, func(t *testing.T, f *vhostusertest.Frontend) error {
			return f.WriteMessage(21, need, nil, eventfd(t))
		}, vhostuser.ErrUnknownRequest},
		{"GET_CONFIG without CONFIG", noProto(vhostuser.ProtocolFReplyAck), raw(vhostuser.ReqGetConfig, configMsg(0, 4, 0)), vhostuser.ErrNotNegotiated},
		{"GET_CONFIG size field above its payload", negotiated, raw(vhostuser.ReqGetConfig, configMsg(0, 4, 0)[:14]), vhostuser.ErrBadSize},
		{"SET_CONFIG of 300 bytes", negotiated, raw(vhostuser.ReqSetConfig, configMsg(0, 288, 0)), vhostuser.ErrBadSize},
		{"GET_FEATURES with a payload", nil, raw(vhostuser.ReqGetFeatures, u64le(0)), vhostuser.ErrBadSize},
		{"SET_FEATURES of 4 bytes", nil, raw(vhostuser.ReqSetFeatures, []byte{1, 2, 3, 4}), vhostuser.ErrBadSize},
		{"SET_FEATURES with an fd", nil, func(t *testing.T, f *vhostusertest.Frontend) error {
			return f.WriteMessage(vhostuser.ReqSetFeatures, need, u64le(0), eventfd(t))
		}, vhostuser.ErrBadFDs},
		{"SET_FEATURES not offered", negotiated, raw(vhostuser.ReqSetFeatures, u64le(virtio.FRingPacked)), vhostuser.ErrNotNegotiated},
		{"SET_PROTOCOL_FEATURES not offered", nil, raw(vhostuser.ReqSetProtocolFeatures, u64le(vhostuser.ProtocolFBackendReq)), vhostuser.ErrNotNegotiated},
		{"GET_QUEUE_NUM without MQ", noProto(vhostuser.ProtocolFReplyAck), raw(vhostuser.ReqGetQueueNum, nil), vhostuser.ErrNotNegotiated},
		{"ADD_MEM_REG without CONFIGURE_MEM_SLOTS", noProto(vhostuser.ProtocolFReplyAck),
			withFD(mib, func(int) []byte { return memReg(reg{0, mib, uva0, 0}) }, vhostuser.ReqAddMemReg), vhostuser.ErrNotNegotiated},
		{"SET_LOG_BASE without LOG_SHMFD", noProto(vhostuser.ProtocolFReplyAck),
			withFD(4096, func(int) []byte { return make([]byte, 16) }, vhostuser.ReqSetLogBase), vhostuser.ErrNotNegotiated},
		// Memory tables.
		{"SET_MEM_TABLE with 20 fds", negotiated, func(t *testing.T, f *vhostusertest.Frontend) error {
			// (More than the backend's control buffer takes is left to
			// the kernel, which closes them: TestTruncatedFDs. qemu-user
			// leaks them instead, so this test does not go there.)
			fds := make([]int, 20)
			for i := range fds {
				fds[i] = eventfd(t)
			}
			return f.WriteMessage(vhostuser.ReqSetMemTable, need, memTable(1, reg{0, mib, uva0, 0}), fds...)
		}, vhostuser.ErrBadFDs},
		{"SET_MEM_TABLE with 9 fds", negotiated, func(t *testing.T, f *vhostusertest.Frontend) error {
			fds := make([]int, 9)
			for i := range fds {
				fds[i] = memfd(t, mib)
			}
			return f.WriteMessage(vhostuser.ReqSetMemTable, need, memTable(1, reg{0, mib, uva0, 0}), fds...)
		}, vhostuser.ErrBadFDs},
		{"SET_MEM_TABLE with fewer fds than regions", negotiated, func(t *testing.T, f *vhostusertest.Frontend) error {
			return f.WriteMessage(vhostuser.ReqSetMemTable, need, memTable(2, reg{0, mib, uva0, 0}, reg{mib, mib, uva0 + mib, 0}), memfd(t, mib))
		}, vhostuser.ErrBadFDs},
		{"SET_MEM_TABLE without regions", negotiated, withFD(mib, func(int) []byte { return memTable(0) }, vhostuser.ReqSetMemTable), vhostuser.ErrBadSize},
		{"SET_MEM_TABLE count above its regions", negotiated, withFD(mib, func(int) []byte { return memTable(2, reg{0, mib, uva0, 0}) }, vhostuser.ReqSetMemTable), vhostuser.ErrBadSize},
		{"SET_MEM_TABLE of 9 regions", negotiated, raw(vhostuser.ReqSetMemTable, memTable(9, make([]reg, 9)...)), vhostuser.ErrBadSize},
		{"regions overlap in guest memory", negotiated, table2(reg{0, 2 * mib, uva0, 0}, reg{mib, mib, uva0 + 4*mib, 0}), vhostuser.ErrBadMemory},
		{"regions overlap in user memory", negotiated, table2(reg{0, mib, uva0, 0}, reg{4 * mib, mib, uva0 + mib/2, 0}), vhostuser.ErrBadMemory},
		{"region of size 0", negotiated, table1(reg{0, 0, uva0, 0}, mib), vhostuser.ErrBadMemory},
		{"mmap offset + size overflows", negotiated, table1(reg{0, mib, uva0, ^uint64(0) - 4095}, mib), vhostuser.ErrBadMemory},
		{"guest address + size overflows", negotiated, table1(reg{^uint64(0) - 4095, mib, uva0, 0}, mib), vhostuser.ErrBadMemory},
		{"user address + size overflows", negotiated, table1(reg{0, mib, ^uint64(0) - 4095, 0}, mib), vhostuser.ErrBadMemory},
		{"region larger than its file", negotiated, table1(reg{0, 2 * mib, uva0, 0}, mib), vhostuser.ErrBadMemory},
		{"region beyond its file", negotiated, table1(reg{0, mib, uva0, mib}, mib), vhostuser.ErrBadMemory},
		{"region of 2^60 bytes", negotiated, table1(reg{0, 1 << 60, uva0, 0}, mib), vhostuser.ErrBadMemory},
		{"memory table above the session limit", negotiated, table2(reg{0, 40 * mib, uva0, 0}, reg{40 * mib, 40 * mib, uva0 + 40*mib, 0}), vhostuser.ErrBadMemory},
		{"ADD_MEM_REG above the session limit", withMemory,
			withFD(40*mib, func(int) []byte { return memReg(reg{64 * mib, 40 * mib, uva0 + 64*mib, 0}) }, vhostuser.ReqAddMemReg), vhostuser.ErrBadMemory},
		{"region fd is an eventfd", negotiated, func(t *testing.T, f *vhostusertest.Frontend) error {
			return f.WriteMessage(vhostuser.ReqSetMemTable, need, memTable(1, reg{0, mib, uva0, 0}), eventfd(t))
		}, vhostuser.ErrBadMemory},
		{"ADD_MEM_REG without fd", withMemory, raw(vhostuser.ReqAddMemReg, memReg(reg{64 * mib, mib, uva0 + 64*mib, 0})), vhostuser.ErrBadFDs},
		{"ADD_MEM_REG overlapping", withMemory,
			withFD(mib, func(int) []byte { return memReg(reg{mib, mib, uva0 + 64*mib, 0}) }, vhostuser.ReqAddMemReg), vhostuser.ErrBadMemory},
		{"ADD_MEM_REG beyond the slots", withMemory, func(t *testing.T, f *vhostusertest.Frontend) error {
			for i := 0; i < 6; i++ { // 2 + 6 = 8 slots, the limit
				_, err := f.AddRegion(mib)
				require.NoError(t, err)
			}
			fd := memfd(t, mib)
			return f.WriteMessage(vhostuser.ReqAddMemReg, need, memReg(reg{1 << 40, mib, 1 << 45, 0}), fd)
		}, vhostuser.ErrBadMemory},
		{"REM_MEM_REG of an unknown region", withMemory, raw(vhostuser.ReqRemMemReg, memReg(reg{64 * mib, mib, uva0, 0})), vhostuser.ErrBadMemory},
		{"REM_MEM_REG under a running ring", withRings, func(_ *testing.T, f *vhostusertest.Frontend) error {
			r := f.Regions()[0]
			return f.WriteMessage(vhostuser.ReqRemMemReg, need, memReg(reg{r.GPA, r.Size, r.UVA, 0}))
		}, vhostuser.ErrBadRing},
		// Rings.
		{"ring outside memory", withMemory, ringAt(0x1000, 0x3000, 0x2000), vhostuser.ErrBadRing},
		{"ring across the end of a region", withMemory, ringAt(uva0+16*mib-512, uva0+8192, uva0+4096), vhostuser.ErrBadRing},
		{"ring misaligned", withMemory, ringAt(uva0+8, uva0+8192, uva0+4096), vhostuser.ErrBadRing},
		{"used ring misaligned", withMemory, ringAt(uva0, uva0+8194, uva0+4096), vhostuser.ErrBadRing},
		{"SET_VRING_NUM ring out of range", negotiated, raw(vhostuser.ReqSetVringNum, state(2, 64)), vhostuser.ErrInvalid},
		{"SET_VRING_NUM ring 2^32-1", negotiated, raw(vhostuser.ReqSetVringNum, state(0xffffffff, 64)), vhostuser.ErrInvalid},
		{"SET_VRING_NUM 0", negotiated, raw(vhostuser.ReqSetVringNum, state(0, 0)), vhostuser.ErrBadRing},
		{"SET_VRING_NUM 3", negotiated, raw(vhostuser.ReqSetVringNum, state(0, 3)), vhostuser.ErrBadRing},
		{"SET_VRING_NUM 65536", negotiated, raw(vhostuser.ReqSetVringNum, state(0, 65536)), vhostuser.ErrBadRing},
		{"SET_VRING_NUM on a started ring", withRings, raw(vhostuser.ReqSetVringNum, state(0, 128)), vhostuser.ErrInvalid},
		{"SET_VRING_BASE above 16 bits", negotiated, raw(vhostuser.ReqSetVringBase, state(0, 0x10000)), vhostuser.ErrInvalid},
		{"SET_VRING_ADDR unknown flag", negotiated, raw(vhostuser.ReqSetVringAddr, vringAddr(0, 2, 0, 0, 0, 0)), vhostuser.ErrInvalid},
		{"SET_VRING_ADDR ring out of range", negotiated, raw(vhostuser.ReqSetVringAddr, vringAddr(7, 0, 0, 0, 0, 0)), vhostuser.ErrInvalid},
		{"GET_VRING_BASE ring out of range", negotiated, raw(vhostuser.ReqGetVringBase, state(200, 0)), vhostuser.ErrInvalid},
		{"SET_VRING_ENABLE 2", negotiated, raw(vhostuser.ReqSetVringEnable, state(0, 2)), vhostuser.ErrInvalid},
		{"SET_VRING_ENABLE ring out of range", negotiated, raw(vhostuser.ReqSetVringEnable, state(2, 1)), vhostuser.ErrInvalid},
		{"SET_VRING_KICK no fd, no flag", negotiated, kick(0), vhostuser.ErrBadFDs},
		{"SET_VRING_KICK fd and no-fd flag", negotiated, func(t *testing.T, f *vhostusertest.Frontend) error {
			return kick(0|1<<8, eventfd(t))(t, f)
		}, vhostuser.ErrBadFDs},
		{"SET_VRING_KICK reserved bits", negotiated, kick(1 << 9), vhostuser.ErrInvalid},
		{"SET_VRING_KICK ring out of range", negotiated, kick(255 | 1<<8), vhostuser.ErrInvalid},
		{"SET_VRING_KICK fd is a regular file", negotiated, func(t *testing.T, f *vhostusertest.Frontend) error {
			return kick(0, memfd(t, 4096))(t, f)
		}, vhostuser.ErrBadFDs},
		{"SET_VRING_CALL two fds", negotiated, func(t *testing.T, f *vhostusertest.Frontend) error {
			return f.WriteMessage(vhostuser.ReqSetVringCall, need, u64le(0), eventfd(t), eventfd(t))
		}, vhostuser.ErrBadFDs},
		// Device requests.
		{"features changed under running rings", withRings, func(_ *testing.T, f *vhostusertest.Frontend) error {
			return f.WriteMessage(vhostuser.ReqSetFeatures, need, u64le(f.Features()&^virtio.FEventIdx))
		}, vhostuser.ErrInvalid},
		{"LOG_ALL before SET_LOG_BASE", negotiated, func(_ *testing.T, f *vhostusertest.Frontend) error {
			return f.WriteMessage(vhostuser.ReqSetFeatures, need, u64le(f.Features()|vhostuser.FLogAll))
		}, vhostuser.ErrInvalid},
		{"SET_LOG_BASE beyond its file", negotiated, withFD(4096, func(int) []byte {
			b := make([]byte, 16)
			ne.PutUint64(b, 8192)
			return b
		}, vhostuser.ReqSetLogBase), vhostuser.ErrBadMemory},
		{"SET_LOG_BASE of 8 GiB", negotiated, withFD(4096, func(int) []byte {
			b := make([]byte, 16)
			ne.PutUint64(b, 8<<30)
			return b
		}, vhostuser.ReqSetLogBase), vhostuser.ErrBadMemory},
		{"SET_LOG_BASE of size 0", negotiated, withFD(4096, func(int) []byte { return make([]byte, 16) }, vhostuser.ReqSetLogBase), vhostuser.ErrBadMemory},
		{"SET_LOG_BASE of 8 bytes", negotiated, withFD(4096, func(int) []byte { return u64le(0) }, vhostuser.ReqSetLogBase), vhostuser.ErrBadSize},
		{"SET_LOG_FD without fd", negotiated, raw(vhostuser.ReqSetLogFD, nil), vhostuser.ErrBadFDs},
		{"used ring logged outside the log", withRings, func(t *testing.T, f *vhostusertest.Frontend) error {
			_, err := f.SetLogBase(64)
			require.NoError(t, err)
			d := f.Ring(0).Driver
			return f.WriteMessage(vhostuser.ReqSetVringAddr, need, vringAddr(0, 1, f.UVA(d.DescGPA()), f.UVA(d.UsedGPA()), f.UVA(d.AvailGPA()), 1<<40))
		}, vhostuser.ErrBadRing},
		{"NET_SET_MTU 10", negotiated, raw(vhostuser.ReqNetSetMTU, u64le(10)), vhostuser.ErrInvalid},
		{"NET_SET_MTU above the maximum", negotiated, raw(vhostuser.ReqNetSetMTU, u64le(70000)), vhostuser.ErrInvalid},
		{"SET_STATUS above 8 bits", negotiated, raw(vhostuser.ReqSetStatus, u64le(0x100)), vhostuser.ErrInvalid},
	}
}

// TestHostileFrontends sends every kind of bad message, each on its own
// connection, while another frontend's traffic goes on. Each bad
// connection ends with the expected error, its device closed and its fds
// released; the good one never notices.
func TestHostileFrontends(t *testing.T) {
	h := newHarness(t, vhostuser.Options{MaxMemSlots: 8, MTU: 9000, MaxGuestMemory: 64 * mib})
	good := started(t, h, vhostusertest.Options{}, 1, 64)
	echoOnce(t, good, 0, frame(100, 0), vhostusertest.LayoutSplit)
	baseFDs := openFDs(t)
	cases := hostileCases()
	for i, c := range cases {
		ok := t.Run(c.name, func(t *testing.T) {
			f := vhostusertest.New(t, vhostusertest.Options{})
			defer f.Close()
			require.NoError(t, f.Dial(h.path))
			if c.prep != nil {
				c.prep(t, f)
			}
			// The backend may close the connection before a multi-message
			// send is done: a broken pipe is the expected outcome then.
			if err := c.send(t, f); err != nil && !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
				require.NoError(t, err)
			}
			require.NoError(t, f.WaitClosed())
			e := h.waitEnded()
			require.Error(t, e.err)
			require.True(t, errors.Is(e.err, c.want), "got %v, want %v", e.err, c.want)
			d := h.device(e.info.ID)
			require.True(t, d.closed.Load())
			require.Equal(t, d.starts.Load(), d.stops.Load())
			require.Nil(t, d.broken.Load())
		})
		if !ok {
			// Keep the next case from reading this one's end.
			for len(h.ended) > 0 {
				<-h.ended
			}
			continue
		}
		echoOnce(t, good, 0, frame(100, byte(i)), vhostusertest.LayoutSplit)
	}
	st := h.srv.Stats()
	require.Equal(t, uint64(len(cases)), st.Errors)
	require.Equal(t, uint64(1), st.Active)
	// Every fd a bad session received is closed (the test closed its own).
	require.Equal(t, baseFDs, openFDs(t))
}

// TestNackBeforeClose: with REPLY_ACK a failed request gets a non-zero
// ack before the connection closes, so the frontend knows which failed.
func TestNackBeforeClose(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := vhostusertest.New(t, vhostusertest.Options{})
	require.NoError(t, f.Dial(h.path))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.WriteMessage(vhostuser.ReqNetSetMTU, need, u64le(10)))
	p, err := f.ReadReply(vhostuser.ReqNetSetMTU)
	require.NoError(t, err)
	require.Equal(t, uint64(1), ne.Uint64(p))
	require.NoError(t, f.WaitClosed())
	require.ErrorIs(t, h.waitEnded().err, vhostuser.ErrInvalid)

	// Unknown requests are nacked too.
	require.NoError(t, f.Dial(h.path))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.WriteMessage(77, need, nil))
	p, err = f.ReadReply(77)
	require.NoError(t, err)
	require.Equal(t, uint64(1), ne.Uint64(p))
	require.NoError(t, f.WaitClosed())
	require.ErrorIs(t, h.waitEnded().err, vhostuser.ErrUnknownRequest)
}

// TestGuestBreaksQueue: a guest that breaks its ring (a descriptor
// pointing outside memory) breaks that queue in the device; the session
// and the other sessions go on.
func TestGuestBreaksQueue(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	good := started(t, h, vhostusertest.Options{}, 1, 64)
	bad := started(t, h, vhostusertest.Options{}, 1, 64)
	dBad := h.lastDevice()
	tx := bad.Ring(1).Driver
	head, err := tx.AddOut(make([]byte, 64))
	require.NoError(t, err)
	d := tx.ReadDesc(head)
	d.Addr = 1 << 50
	tx.WriteDesc(head, d)
	require.NoError(t, bad.Flush(0))
	eventually(t, "broken queue", func() bool { return dBad.broken.Load() != nil })
	require.ErrorIs(t, *dBad.broken.Load(), virtio.ErrBroken)
	echoOnce(t, good, 0, frame(100, 1), vhostusertest.LayoutSplit)
	// The session itself still answers.
	_, err = bad.GetFeatures()
	require.NoError(t, err)
}

// TestFrontendBlocksItsKick: a frontend clears O_NONBLOCK on its kick fds
// (the backend's copies share the flag), kicks, and goes away. Each
// worker takes the kick, finds its ring empty and reads the kick fd again
// before it sleeps: a read that waited on the empty fd held the worker,
// and the end of the session, which stops every ring, waited for it.
func TestFrontendBlocksItsKick(t *testing.T) {
	vhostuser.SkipWithoutNoWait(t)
	h := newHarness(t, vhostuser.Options{})
	f := started(t, h, vhostusertest.Options{}, 1, 64)
	echoOnce(t, f, 0, frame(100, 0), vhostusertest.LayoutSplit)
	d := h.lastDevice()
	for i := range f.Rings() {
		require.NoError(t, f.BlockKickFD(i))
	}
	for i := range f.Rings() {
		require.NoError(t, f.Kick(i))
	}
	time.Sleep(50 * time.Millisecond) // the workers take the kicks and wait again
	echoOnce(t, f, 0, frame(100, 1), vhostusertest.LayoutSplit)
	f.Close()
	e := h.waitEnded()
	require.Equal(t, d.info.ID, e.info.ID)
	require.True(t, d.closed.Load())
	require.Equal(t, d.starts.Load(), d.stops.Load())
}

// TestFrontendJamsItsCall: a frontend fills its receive ring's call
// eventfd to the maximum, clears O_NONBLOCK on it (the backend's copy
// shares the flag) and sends a frame. The worker that echoes it back
// notifies, and the write waits on the counter: the call watchdog ends the
// wait and the session, with ErrBadFDs. Another frontend's traffic goes on.
func TestFrontendJamsItsCall(t *testing.T) {
	vhostuser.ShortenCallWatch(t, 20*time.Millisecond)
	h := newHarness(t, vhostuser.Options{})
	good := started(t, h, vhostusertest.Options{}, 1, 64)
	f := started(t, h, vhostusertest.Options{}, 1, 64)
	echoOnce(t, f, 0, frame(100, 0), vhostusertest.LayoutSplit)
	d := h.lastDevice()
	require.NoError(t, f.JamCallFD(0))
	require.NoError(t, f.SendFrame(0, virtio.NetHdr{}, frame(100, 1), vhostusertest.LayoutSplit))
	e := h.waitEnded()
	require.Equal(t, d.info.ID, e.info.ID)
	require.ErrorIs(t, e.err, vhostuser.ErrBadFDs)
	require.Contains(t, e.err.Error(), "ring 0's call fd")
	require.True(t, d.closed.Load())
	require.Equal(t, d.starts.Load(), d.stops.Load())
	echoOnce(t, good, 0, frame(100, 2), vhostusertest.LayoutSplit)
}
