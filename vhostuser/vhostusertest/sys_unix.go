package vhostusertest

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

func sizeAndMap(fd, size int) (int, []byte, error) {
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		_ = unix.Close(fd)
		return -1, nil, fmt.Errorf("ftruncate: %w", err)
	}
	data, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		_ = unix.Close(fd)
		return -1, nil, fmt.Errorf("mmap: %w", err)
	}
	return fd, data, nil
}

// newPipe returns a nonblocking, close-on-exec pipe.
func newPipe() (r, w int, err error) {
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return -1, -1, fmt.Errorf("pipe: %w", err)
	}
	for _, fd := range p {
		unix.CloseOnExec(fd)
		if err := unix.SetNonblock(fd, true); err != nil {
			_ = unix.Close(p[0])
			_ = unix.Close(p[1])
			return -1, -1, fmt.Errorf("pipe: %w", err)
		}
	}
	return p[0], p[1], nil
}

// signal writes the 8-byte value 1 to a notification fd (eventfd or pipe).
func signal(fd int) error {
	var one = [8]byte{1}
	for {
		_, err := unix.Write(fd, one[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return nil // already signalled
		case err != nil:
			return fmt.Errorf("signal fd %d: %w", fd, err)
		}
		return nil
	}
}

// drain reads a notification fd empty and returns how many 8-byte
// signals it held (an eventfd's counter, or a pipe's bytes / 8).
func drain(fd int, eventfd bool) (uint64, error) {
	var buf [512]byte
	var n uint64
	for {
		k, err := unix.Read(fd, buf[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return n, nil
		case err != nil:
			return n, fmt.Errorf("drain fd %d: %w", fd, err)
		case k == 0:
			return n, errors.New("notification fd closed")
		case eventfd:
			n += nativeEndian.Uint64(buf[:8])
		default:
			n += uint64(k) / 8
		}
	}
}

// waitReadable waits until fd is readable or timeout passes; it reports
// whether fd became readable.
func waitReadable(fd int, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		// Rounded up: a timeout under a millisecond would otherwise
		// poll with 0 and spin until the deadline.
		ms := int((time.Until(deadline) + time.Millisecond - 1) / time.Millisecond)
		if ms < 0 {
			ms = 0
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll: %w", err)
		}
		return n > 0, nil
	}
}
