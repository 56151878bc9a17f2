package datapath

import (
	"errors"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/internal/mmsg"
)

// Batched datagram I/O on Linux: recvmmsg(2) and sendmmsg(2) (through
// internal/mmsg) move up to MaxBatch datagrams per system call. It is the
// only unsafe code of package datapath: pointers to buffers the Go code
// keeps alive, handed to the kernel for the duration of one system call.

// sockaddrUnixLen is sizeof(struct sockaddr_un).
const sockaddrUnixLen = unix.SizeofSockaddrUnix

// dgramRx receives batches of datagrams with recvmmsg.
type dgramRx struct {
	raw   syscall.RawConn
	bufs  [MaxBatch][]byte
	names [MaxBatch][sockaddrUnixLen]byte
	iovs  [MaxBatch]unix.Iovec
	msgs  [MaxBatch]mmsg.Msg
	n     int
	err   error
	read  func(fd uintptr) bool // made once: no closure per call
}

func newDgramRx(c *net.UnixConn) (*dgramRx, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &dgramRx{raw: raw}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, maxFrameLen)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(len(r.bufs[i]))
		h := &r.msgs[i].Hdr
		// SAFETY: names[i] lives as long as r; the kernel writes at most
		// Namelen bytes into it during the call.
		h.Name = (*byte)(unsafe.Pointer(&r.names[i][0]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
	}
	r.read = func(fd uintptr) bool {
		for i := range r.msgs {
			r.msgs[i].Hdr.Namelen = sockaddrUnixLen
			r.msgs[i].Hdr.Flags = 0
		}
		// SAFETY: msgs, their iovecs, names and buffers are fields of
		// r (heap, kept alive by r) for the whole call.
		n, e := mmsg.Call(unix.SYS_RECVMMSG, fd, r.msgs[:], unix.MSG_DONTWAIT)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false // wait for the socket to be readable
		}
		r.n, r.err = n, nil
		if e != 0 {
			r.n, r.err = 0, e
		}
		return true
	}
	return r, nil
}

// recv waits for datagrams and returns how many it received (at least one).
func (r *dgramRx) recv() (int, error) {
	for {
		if err := r.raw.Read(r.read); err != nil {
			return 0, err
		}
		if r.err != nil {
			return 0, r.err
		}
		if r.n > 0 {
			return r.n, nil
		}
	}
}

// datagram returns the source address (the sun_path bytes, without the
// trailing NULs of a path) and the payload of datagram i of the last recv.
// A datagram truncated to the buffer (longer than a frame may be) comes
// back whole-buffer long and is dropped by the port as too big.
func (r *dgramRx) datagram(i int) (addr, data []byte) {
	m := &r.msgs[i]
	nl := min(int(m.Hdr.Namelen), sockaddrUnixLen)
	addr = unixName(r.names[i][:max(nl, 2)][2:])
	data = r.bufs[i][:m.Len]
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
		data = r.bufs[i][:0] // dropped as malformed: longer than any frame
	}
	return addr, data
}

// unixName is a sun_path as the kernel gave it: a path up to its first NUL,
// or an abstract name (leading NUL) as it is.
func unixName(p []byte) []byte {
	if len(p) == 0 || p[0] == 0 {
		return p
	}
	for i, b := range p {
		if b == 0 {
			return p[:i]
		}
	}
	return p
}

// dgramTx sends batches of datagrams to one peer with sendmmsg.
type dgramTx struct {
	raw     syscall.RawConn
	name    [sockaddrUnixLen]byte
	namelen uint32
	iovs    [MaxBatch]unix.Iovec
	msgs    [MaxBatch]mmsg.Msg
	cnt     int
	n       int
	err     error
	write   func(fd uintptr) bool
}

func newDgramTx(c *net.UnixConn, addr []byte) (*dgramTx, error) {
	if len(addr) >= sockaddrUnixLen-2 {
		return nil, errors.New("peer address too long")
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	t := &dgramTx{raw: raw}
	*(*uint16)(unsafe.Pointer(&t.name[0])) = unix.AF_UNIX // SAFETY: in bounds, host order as the kernel wants
	copy(t.name[2:], addr)
	t.namelen = uint32(2 + len(addr))
	if addr[0] != 0 {
		t.namelen++ // a path: with its NUL
	}
	for i := range t.msgs {
		h := &t.msgs[i].Hdr
		// SAFETY: name lives as long as t.
		h.Name = (*byte)(unsafe.Pointer(&t.name[0]))
		h.Namelen = t.namelen
		h.Iov = &t.iovs[i]
		h.SetIovlen(1)
	}
	t.write = func(fd uintptr) bool {
		// SAFETY: msgs and iovecs are fields of t; the iovecs point into
		// the writer's queue buffer, alive for the whole call.
		n, e := mmsg.Call(unix.SYS_SENDMMSG, fd, t.msgs[:t.cnt], unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		t.n, t.err = n, nil
		if e != 0 {
			t.n, t.err = 0, e
		}
		return true // a full peer is retried by the caller (poll says nothing about it)
	}
	return t, nil
}

// send sends datagrams i, i+1, ... of the queue (buf, ends; datagram i
// starts at start) and returns how many the kernel took. errDgramFull: the
// peer's receive queue is full; errPeerGone: its socket is closed or
// removed.
func (t *dgramTx) send(buf []byte, ends []int, start, i int) (int, error) {
	t.cnt = min(len(ends)-i, MaxBatch)
	for k := 0; k < t.cnt; k++ {
		end := ends[i+k]
		t.iovs[k].Base = &buf[start]
		t.iovs[k].SetLen(end - start)
		start = end
	}
	if err := t.raw.Write(t.write); err != nil {
		return 0, err
	}
	if t.err != nil {
		return t.n, dgramErr(t.err)
	}
	return t.n, nil
}

func dgramErr(err error) error {
	switch {
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.ENOBUFS):
		return errDgramFull
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return errors.Join(errPeerGone, err)
	}
	return err
}
