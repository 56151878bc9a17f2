package vhostuser

import (
	"time"

	"golang.org/x/sys/unix"
)

// notifyFDIsEventfd reports whether fd is an eventfd (an anonymous inode:
// no file type bits), not a pipe or a socket.
func notifyFDIsEventfd(fd int) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, err
	}
	return st.Mode&unix.S_IFMT == 0, nil
}

// callIov is the one iovec of a pwritev2 of callValue (read only).
var callIov = func() (v unix.Iovec) {
	v.Base = &callValue[0]
	v.SetLen(len(callValue))
	return v
}()

// writeOnce writes callValue once. A pipe or a socket is written with
// pwritev2(2) and RWF_NOWAIT ("If the operation would block, return
// EAGAIN"), which holds whatever the frontend did to the fd's O_NONBLOCK;
// an eventfd's write takes no flags (EOPNOTSUPP) and is write(2), watched
// (callwatch.go). Where the kernel refuses the flag for a pipe too
// (EOPNOTSUPP before Linux 4.14; ENOSYS without pwritev2, or under an
// emulator without it) the fd gets write(2) from then on.
func (c *callFD) writeOnce() error {
	if !c.eventfd && !c.noWaitOff.Load() {
		_, refused, err := noWait(unix.SYS_PWRITEV2, c.fd, &callIov)
		if !refused {
			return err
		}
		c.noWaitOff.Store(true)
	}
	_, err := unix.Write(c.fd, callValue[:])
	return err
}

// unstick ends a write that has waited on c, an eventfd, for a watchdog
// tick, if the frontend made c block: it turns O_NONBLOCK on again (the
// writes after it do not wait; the frontend may turn it off again), tells
// onBlocked once, and reads the counter until a waiting write has
// finished (the frontend may fill the counter again: it tries for up to
// 100 ms, and the next tick tries again). A read may take the finished
// write's 1 too: the frontend is not owed it.
func unstick(c *callFD) {
	fl, err := unix.FcntlInt(uintptr(c.fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK != 0 {
		return // cannot wait on the counter: a slow write, not a blocked one
	}
	_, _ = unix.FcntlInt(uintptr(c.fd), unix.F_SETFL, fl|unix.O_NONBLOCK)
	if !c.told && c.onBlocked != nil {
		c.told = true
		c.onBlocked()
	}
	var kr kickReader
	var buf [8]byte
	kr.init(buf[:])
	v0 := c.state.Load()
	for range 100 {
		if v := c.state.Load(); v>>32 != v0>>32 || uint32(v)&callBusy <= 1 {
			return // a write finished, or only this look is left
		}
		_, _ = kr.read(c.fd, buf[:])
		time.Sleep(time.Millisecond)
	}
}
