package vhostuser

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// fakeConn is a transport fed from memory: in is delivered in reads of
// at most chunk bytes (all at once when 0), fds with the first read, as
// the kernel would (the ones that do not fit oob are closed, MSG_CTRUNC).
type fakeConn struct {
	in    []byte
	fds   []int
	chunk int
	out   bytes.Buffer
}

func (c *fakeConn) ReadMsgUnix(b, oob []byte) (n, oobn, flags int, addr *net.UnixAddr, err error) {
	if len(c.fds) > 0 {
		fit := (len(oob) - unix.CmsgSpace(0)) / 4
		give := c.fds
		if len(give) > fit {
			for _, fd := range give[fit:] {
				_ = unix.Close(fd)
			}
			give = give[:fit]
			flags |= unix.MSG_CTRUNC
		}
		oobn = copy(oob, unix.UnixRights(give...))
		c.fds = nil
	}
	if len(c.in) == 0 {
		return 0, oobn, flags, nil, io.EOF
	}
	k := len(b)
	if c.chunk > 0 {
		k = min(k, c.chunk)
	}
	n = copy(b[:k], c.in)
	c.in = c.in[n:]
	return n, oobn, flags, nil, nil
}

func (c *fakeConn) Write(b []byte) (int, error) { return c.out.Write(b) }
func (c *fakeConn) Close() error                { return nil }

// nopDevice counts calls and checks their order.
type nopDevice struct {
	t       testing.TB
	running map[int]bool
	closed  bool
	onStart func(idx int)
}

func (d *nopDevice) StartQueue(idx int, q *virtio.Queue, kick virtio.Doorbell, call virtio.Notifier) {
	if d.closed || d.running[idx] || q == nil || kick == nil || call == nil {
		d.t.Errorf("StartQueue(%d) closed=%v running=%v", idx, d.closed, d.running[idx])
	}
	d.running[idx] = true
	if d.onStart != nil {
		d.onStart(idx)
	}
}

func (d *nopDevice) StopQueue(idx int) {
	if !d.running[idx] {
		d.t.Errorf("StopQueue(%d) of a queue not running", idx)
	}
	delete(d.running, idx)
}

func (d *nopDevice) SetLog(*virtio.DirtyLog) {}

func (d *nopDevice) Close() {
	if d.closed || len(d.running) != 0 {
		d.t.Errorf("Close: closed=%v running=%v", d.closed, d.running)
	}
	d.closed = true
}

// testSession returns a session on c with a nopDevice.
func testSession(t testing.TB, o Options, c transport) (*Session, *nopDevice) {
	d := &nopDevice{t: t, running: map[int]bool{}}
	o.NewDevice = func(SessionInfo) (Device, error) { return d, nil }
	o.Logger = slog.New(slog.DiscardHandler)
	cfg, err := o.config()
	if err != nil {
		t.Fatal(err)
	}
	return newSession(&cfg, SessionInfo{ID: 1}, d, c), d
}

// msg encodes one request.
func msg(req Request, flags uint32, payload []byte) []byte {
	return append(putHeader(req, flags|flagVersion, uint32(len(payload))), payload...)
}

func u64b(v uint64) []byte { return ne.AppendUint64(nil, v) }

func stateb(idx, num uint32) []byte {
	b := make([]byte, 8)
	vringState{idx, num}.encode(b)
	return b
}

func memTableBytes(rs ...memRegion) []byte {
	b := make([]byte, sizeMemTable+sizeMemRegion*len(rs))
	ne.PutUint32(b, uint32(len(rs)))
	for i, r := range rs {
		encodeRegion(b[sizeMemTable+i*sizeMemRegion:], r)
	}
	return b
}

func encodeRegion(b []byte, r memRegion) {
	ne.PutUint64(b[0:], r.GPA)
	ne.PutUint64(b[8:], r.Size)
	ne.PutUint64(b[16:], r.UVA)
	ne.PutUint64(b[24:], r.MmapOffset)
}

func vringAddrBytes(a vringAddr) []byte {
	b := make([]byte, sizeVringAddr)
	ne.PutUint32(b[0:], a.Index)
	ne.PutUint32(b[4:], a.Flags)
	ne.PutUint64(b[8:], a.Desc)
	ne.PutUint64(b[16:], a.Used)
	ne.PutUint64(b[24:], a.Avail)
	ne.PutUint64(b[32:], a.Log)
	return b
}

// pollerOnce makes the runtime create its netpoller fds (epoll, eventfd)
// before a test counts on fd numbers: otherwise the first kick doorbell of
// a session creates them, reusing numbers the session just closed.
var pollerOnce sync.Once

func initPoller() {
	pollerOnce.Do(func() {
		r, w, err := os.Pipe()
		if err == nil {
			_ = r.Close()
			_ = w.Close()
		}
	})
}
