//go:build !linux

package datapath

import (
	"errors"
	"net"
	"syscall"
)

// Datagram I/O where there is no recvmmsg/sendmmsg (macOS): one datagram
// per system call, through the net package. It allocates the peer's
// address per datagram received; the Linux path (framesock_mmsg_linux.go)
// is the one measured and held to no allocations.

type dgramRx struct {
	c    *net.UnixConn
	buf  []byte
	n    int
	addr []byte
}

func newDgramRx(c *net.UnixConn) (*dgramRx, error) {
	return &dgramRx{c: c, buf: make([]byte, maxFrameLen+1)}, nil
}

func (r *dgramRx) recv() (int, error) {
	n, from, err := r.c.ReadFromUnix(r.buf)
	if err != nil {
		return 0, err
	}
	r.n, r.addr = n, r.addr[:0]
	if from != nil {
		r.addr = append(r.addr, from.Name...)
	}
	return 1, nil
}

func (r *dgramRx) datagram(int) (addr, data []byte) {
	if r.n > maxFrameLen {
		return r.addr, r.buf[:0] // longer than any frame: dropped as malformed
	}
	return r.addr, r.buf[:r.n]
}

type dgramTx struct {
	c  *net.UnixConn
	to *net.UnixAddr
}

func newDgramTx(c *net.UnixConn, addr []byte) (*dgramTx, error) {
	return &dgramTx{c: c, to: &net.UnixAddr{Name: string(addr), Net: "unixgram"}}, nil
}

func (t *dgramTx) send(buf []byte, ends []int, start, i int) (int, error) {
	if _, err := t.c.WriteToUnix(buf[start:ends[i]], t.to); err != nil {
		return 0, dgramErr(err)
	}
	return 1, nil
}

func dgramErr(err error) error {
	switch {
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.ENOBUFS):
		// macOS answers ENOBUFS when the receiver's queue is full.
		return errDgramFull
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR):
		return errors.Join(errPeerGone, err)
	}
	return err
}
