//go:build linux

package main

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched datagram I/O for the driver's peers (struct mmsghdr, linux
// include/linux/socket.h), so that the peers, not the backend, are not
// what limits a datagram run: one sendmmsg or recvmmsg moves up to 64
// datagrams.

type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [unsafe.Sizeof(uintptr(0)) - 4]byte
}

type mmsg struct {
	raw  syscall.RawConn
	iovs [64]unix.Iovec
	msgs [64]mmsghdr
	bufs [64][]byte
}

func newMmsg(c *net.UnixConn, bufSize int) (*mmsg, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	m := &mmsg{raw: raw}
	for i := range m.msgs {
		m.bufs[i] = make([]byte, bufSize)
		m.iovs[i].Base = &m.bufs[i][0]
		m.iovs[i].SetLen(bufSize)
		m.msgs[i].hdr.Iov = &m.iovs[i]
		m.msgs[i].hdr.SetIovlen(1)
	}
	return m, nil
}

// call runs sendmmsg or recvmmsg (trap) on up to n messages, waiting for
// the socket as the netpoller says; it returns how many moved.
func (m *mmsg) call(trap uintptr, n int) (int, error) {
	var got int
	var serr error
	var err error
	op := func(fd uintptr) bool {
		// SAFETY: msgs, iovecs and buffers are fields of m, alive for the call.
		r, _, e := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&m.msgs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN {
			return false
		}
		got, serr = int(r), nil
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
func (m *mmsg) sendBatch(f []byte, n int) error {
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
func (m *mmsg) recvBatch() (int, error) {
	for i := range m.msgs {
		m.iovs[i].Base = &m.bufs[i][0]
		m.iovs[i].SetLen(len(m.bufs[i]))
	}
	return m.call(unix.SYS_RECVMMSG, len(m.msgs))
}
