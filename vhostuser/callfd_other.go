//go:build !linux

package vhostuser

import "golang.org/x/sys/unix"

// notifyFDIsEventfd: outside Linux call fds are pipes or sockets.
func notifyFDIsEventfd(int) (bool, error) { return false, nil }

// writeOnce writes callValue once with write(2): there is no per-call "do
// not wait" here (pwritev2 RWF_NOWAIT), so a frontend that clears the fd's
// O_NONBLOCK and never reads its pipe can make it wait.
func (c *callFD) writeOnce() error {
	_, err := unix.Write(c.fd, callValue[:])
	return err
}

// unstick: no eventfds, nothing to watch.
func unstick(*callFD) {}
