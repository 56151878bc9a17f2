//go:build !linux

package blockpoll

import "golang.org/x/sys/unix"

// Poll waits, without a timeout, until one of fds is ready, and reports how
// many are. Outside Linux it is unix.Poll: the wait holds the goroutine's P
// until the runtime's monitor hands it on (see the package comment).
func Poll(fds []unix.PollFd) (int, error) {
	return unix.Poll(fds, -1)
}
