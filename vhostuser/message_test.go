package vhostuser

import (
	"errors"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/virtio"
)

func putHeader(req Request, flags, size uint32) []byte {
	b := make([]byte, headerSize)
	ne.PutUint32(b, uint32(req))
	ne.PutUint32(b[4:], flags)
	ne.PutUint32(b[8:], size)
	return b
}

func TestDecodeHeader(t *testing.T) {
	cases := []struct {
		name  string
		b     []byte
		want  error
		reply bool
	}{
		{"plain", putHeader(ReqGetFeatures, 1, 0), nil, false},
		{"need reply", putHeader(ReqSetFeatures, 1|flagNeedReply, 8), nil, true},
		{"largest payload", putHeader(ReqGetConfig, 1, maxPayload), nil, false},
		{"short", []byte{1, 0, 0}, ErrBadHeader, false},
		{"version 0", putHeader(ReqGetFeatures, 0, 0), ErrBadHeader, false},
		{"version 3", putHeader(ReqGetFeatures, 3, 0), ErrBadHeader, false},
		{"reply", putHeader(ReqGetFeatures, 1|flagReply, 0), ErrBadHeader, false},
		{"unknown flag", putHeader(ReqGetFeatures, 1|1<<31, 0), ErrBadHeader, false},
		{"too big", putHeader(ReqSetMemTable, 1, maxPayload+1), ErrBadSize, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := decodeHeader(c.b)
			if c.want != nil {
				require.ErrorIs(t, err, c.want)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.reply, h.needReply())
		})
	}
}

func TestCheckSize(t *testing.T) {
	cases := []struct {
		kind payloadKind
		ok   []int
		bad  []int
	}{
		{payloadNone, []int{0}, []int{1, 8}},
		{payloadU64, []int{8}, []int{0, 4, 16}},
		{payloadVringState, []int{8}, []int{0, 12}},
		{payloadVringAddr, []int{40}, []int{32, 48}},
		{payloadMemReg, []int{40}, []int{32, 48}},
		{payloadLog, []int{16}, []int{8, 24}},
		{payloadMemTable, []int{40, 72, 264}, []int{0, 8, 39, 41, 296}},
		{payloadConfig, []int{12, 268}, []int{0, 11, 269}},
	}
	for _, c := range cases {
		for _, n := range c.ok {
			require.NoError(t, c.kind.checkSize(n), "kind %d size %d", c.kind, n)
		}
		for _, n := range c.bad {
			require.ErrorIs(t, c.kind.checkSize(n), ErrBadSize, "kind %d size %d", c.kind, n)
		}
	}
}

// TestTable: every request constant has a complete row, and the rows say
// what the spec says about replies and fds.
func TestTable(t *testing.T) {
	reqs := []Request{
		ReqGetFeatures, ReqSetFeatures, ReqSetOwner, ReqResetOwner, ReqSetMemTable, ReqSetLogBase,
		ReqSetLogFD, ReqSetVringNum, ReqSetVringAddr, ReqSetVringBase, ReqGetVringBase,
		ReqSetVringKick, ReqSetVringCall, ReqSetVringErr, ReqGetProtocolFeatures,
		ReqSetProtocolFeatures, ReqGetQueueNum, ReqSetVringEnable, ReqSendRARP, ReqNetSetMTU,
		ReqGetConfig, ReqSetConfig, ReqGetMaxMemSlots, ReqAddMemReg, ReqRemMemReg, ReqSetStatus, ReqGetStatus,
	}
	names := map[string]bool{}
	for _, r := range reqs {
		e := lookup(r)
		require.NotNil(t, e, "%d", r)
		require.Equal(t, r, e.req)
		require.NotEmpty(t, e.name)
		require.False(t, names[e.name], e.name)
		names[e.name] = true
		require.Equal(t, e.name, r.String())
		require.LessOrEqual(t, e.minFDs, e.maxFDs)
		require.LessOrEqual(t, e.maxFDs, maxFDs)
	}
	require.Len(t, names, len(reqs))
	// Spec "Communication": the requests that have their own reply.
	for _, r := range []Request{ReqGetFeatures, ReqGetProtocolFeatures, ReqGetVringBase, ReqSetLogBase,
		ReqGetQueueNum, ReqGetMaxMemSlots, ReqGetStatus, ReqGetConfig} {
		require.True(t, lookup(r).reply, r.String())
	}
	for _, r := range []Request{0, 21, 22, 23, 26, 35, 41, 1000, 1 << 31} {
		require.Nil(t, lookup(r), "%d", r)
		require.Contains(t, r.String(), "request(")
	}
	require.NotZero(t, DefaultProtocolFeatures&ProtocolFConfig, "the config space is served")
}

func TestProtocolFeatureString(t *testing.T) {
	require.Equal(t, "none", protocolFeatureString(0))
	require.Equal(t, "MQ|REPLY_ACK|CONFIGURE_MEM_SLOTS", protocolFeatureString(ProtocolFMQ|ProtocolFReplyAck|ProtocolFConfigureMemSlots))
	require.Equal(t, "STATUS|bit40", protocolFeatureString(ProtocolFStatus|1<<40))
}

func TestOptionsValidation(t *testing.T) {
	nd := func(SessionInfo) (Device, error) { return nil, errors.New("x") }
	bad := []Options{
		{},
		{NewDevice: nd, Features: virtio.FAccessPlatform},
		{NewDevice: nd, ProtocolFeatures: ProtocolFBackendReq},
		{NewDevice: nd, MACs: map[string][6]byte{"/s": {0x03, 0, 0, 0, 0, 1}}},
		{NewDevice: nd, MACs: map[string][6]byte{"/s": {}}},
		{NewDevice: nd, QueuePairs: 129},
		{NewDevice: nd, MTU: 67},
		{NewDevice: nd, MaxMemSlots: 7},
		{NewDevice: nd, MaxMemSlots: 513},
		{NewDevice: nd, SocketMode: 0o4600},
	}
	for i, o := range bad {
		_, err := NewServer(o)
		require.Error(t, err, "case %d", i)
	}
	s, err := NewServer(Options{NewDevice: nd})
	require.NoError(t, err)
	require.Equal(t, DefaultFeatures&^virtio.NetFMQ, s.cfg.features, "no MQ with one queue pair")
	require.Equal(t, DefaultProtocolFeatures, s.cfg.proto)
	require.Equal(t, DefaultMaxMemSlots, s.cfg.maxMemSlots)
	require.Equal(t, 1, s.cfg.queuePairs)
}

// errConn fails every read with n = -1, as a raw recvmsg result does.
type errConn struct{ fakeConn }

func (c *errConn) ReadMsgUnix(b, oob []byte) (int, int, int, *net.UnixAddr, error) {
	return -1, 0, 0, nil, unix.ECONNRESET
}

// TestRegressionReadNegativeCount: a read error with n = -1 once sliced
// the buffer with a negative index (found by the first Frontend test).
func TestRegressionReadNegativeCount(t *testing.T) {
	var fds fdSet
	err := readFull(&errConn{}, make([]byte, 12), make([]byte, oobSize), &fds, true)
	require.ErrorIs(t, err, unix.ECONNRESET)
}

func TestReadFullEOF(t *testing.T) {
	var fds fdSet
	c := &fakeConn{}
	require.ErrorIs(t, readFull(c, make([]byte, 12), make([]byte, oobSize), &fds, true), errCleanEOF)
	c = &fakeConn{in: []byte{1, 2, 3}}
	err := readFull(c, make([]byte, 12), make([]byte, oobSize), &fds, true)
	require.ErrorIs(t, err, ErrBadHeader)
	require.NotErrorIs(t, err, io.EOF)
}

func TestFDSetOverflowClosesExtras(t *testing.T) {
	initPoller()
	var s fdSet
	var fds []int
	for i := 0; i < maxFDs+3; i++ {
		fd, err := unix.Dup(0)
		require.NoError(t, err)
		fds = append(fds, fd)
		s.add(fd)
	}
	require.Equal(t, maxFDs+1, s.len())
	kept := s.take(2)
	s.closeRest()
	for i, fd := range fds {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if i == 2 {
			require.NoError(t, err)
		} else {
			require.ErrorIs(t, err, unix.EBADF, "fd %d", i)
		}
	}
	require.NoError(t, unix.Close(kept))
	require.Zero(t, s.len())
}

// replies splits the replies a fakeConn received.
func replies(t *testing.T, out []byte) (reqs []Request, payloads [][]byte) {
	t.Helper()
	for len(out) > 0 {
		require.GreaterOrEqual(t, len(out), headerSize)
		require.Equal(t, uint32(flagVersion|flagReply), ne.Uint32(out[4:]), "reply flags")
		n := int(ne.Uint32(out[8:]))
		reqs = append(reqs, Request(ne.Uint32(out)))
		payloads = append(payloads, out[headerSize:headerSize+n])
		out = out[headerSize+n:]
	}
	return reqs, payloads
}

// TestDispatchReplies: own replies, acks only with REPLY_ACK and
// need_reply, never both, and a nack before the end.
func TestDispatchReplies(t *testing.T) {
	var in []byte
	in = append(in, msg(ReqGetFeatures, flagNeedReply, nil)...)                             // own reply only
	in = append(in, msg(ReqSetFeatures, flagNeedReply, u64b(DefaultFeatures&^FLogAll))...)  // no REPLY_ACK yet: no ack
	in = append(in, msg(ReqSetProtocolFeatures, 0, u64b(ProtocolFReplyAck|ProtocolFMQ))...) //
	in = append(in, msg(ReqSetVringNum, flagNeedReply, stateb(1, 256))...)                  // ack 0
	in = append(in, msg(ReqSetVringAddr, 0, vringAddrBytes(vringAddr{Index: 1, Desc: 0x1000}))...)
	in = append(in, msg(ReqGetQueueNum, flagNeedReply, nil)...)                                  // own reply only
	in = append(in, msg(ReqSetMemTable, flagNeedReply, memTableBytes(memRegion{Size: 4096}))...) // no fd: nack, end
	in = append(in, msg(ReqGetFeatures, 0, nil)...)                                              // never read
	c := &fakeConn{in: in, chunk: 3}
	s, d := testSession(t, Options{QueuePairs: 2}, c)
	err := s.serve()
	require.ErrorIs(t, err, ErrBadFDs)
	require.True(t, d.closed)
	reqs, ps := replies(t, c.out.Bytes())
	require.Equal(t, []Request{ReqGetFeatures, ReqSetVringNum, ReqGetQueueNum, ReqSetMemTable}, reqs)
	require.Equal(t, DefaultFeatures, ne.Uint64(ps[0]))
	require.Equal(t, uint64(0), ne.Uint64(ps[1]))
	require.Equal(t, uint64(4), ne.Uint64(ps[2]), "2 queue pairs are 4 virtqueues")
	require.Equal(t, uint64(1), ne.Uint64(ps[3]))
	require.Equal(t, uint64(6), s.Stats().Messages)
	require.ErrorIs(t, s.Err(), ErrBadFDs)
}

// TestDispatchAllocs: a ring configuration message goes through the whole
// dispatcher without allocating.
func TestDispatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	s, _ := testSession(t, Options{}, &fakeConn{})
	h := header{Request: ReqSetVringBase, Flags: flagVersion, Size: sizeVringState}
	body := stateb(0, 7)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := s.dispatch(h, body); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}
