//go:build linux

package main

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/internal/mmsg"
)

// Batched datagram I/O for the driver's peers (internal/mmsg, as the
// backend's datagram sockets), so that the peers, not the backend, are
// not what limits a datagram run: one sendmmsg or recvmmsg moves up to 64
// datagrams.

type mmsgConn struct {
	raw  syscall.RawConn
	iovs [64]unix.Iovec
	msgs [64]mmsg.Msg
	bufs [64][]byte
}

func newMmsg(c *net.UnixConn, bufSize int) (*mmsgConn, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	m := &mmsgConn{raw: raw}
	for i := range m.msgs {
		m.bufs[i] = make([]byte, bufSize)
		m.iovs[i].Base = &m.bufs[i][0]
		m.iovs[i].SetLen(bufSize)
		m.msgs[i].Hdr.Iov = &m.iovs[i]
		m.msgs[i].Hdr.SetIovlen(1)
	}
	return m, nil
}

// call runs sendmmsg or recvmmsg (trap) on up to n messages, waiting for
// the socket as the netpoller says; it returns how many moved.
func (m *mmsgConn) call(trap uintptr, n int) (int, error) {
	var got int
	var serr error
	var err error
	op := func(fd uintptr) bool {
		// msgs, iovecs and buffers are fields of m, alive for the call.
		r, e := mmsg.Call(trap, fd, m.msgs[:n], unix.MSG_DONTWAIT)
		if e == unix.EAGAIN {
			return false
		}
		got, serr = r, nil
		if e != 0 {
			got, serr = 0, e
		}
		return true
	}
	if trap == unix.SYS_SENDMMSG {
		err = m.raw.Write(op)
	} else {
		err = m.raw.Read(op)
	}
	if err != nil {
		return 0, err
	}
	return got, serr
}

// sendBatch sends n copies of f.
func (m *mmsgConn) sendBatch(f []byte, n int) error {
	for i := 0; i < n; i++ {
		m.iovs[i].Base = &f[0]
		m.iovs[i].SetLen(len(f))
	}
	for sent := 0; sent < n; {
		k, err := m.call(unix.SYS_SENDMMSG, n-sent)
		if err != nil {
			return err
		}
		sent += k
	}
	return nil
}

// recvBatch receives up to 64 datagrams and returns how many.
func (m *mmsgConn) recvBatch() (int, error) {
	for i := range m.msgs {
		m.iovs[i].Base = &m.bufs[i][0]
		m.iovs[i].SetLen(len(m.bufs[i]))
	}
	return m.call(unix.SYS_RECVMMSG, len(m.msgs))
}
