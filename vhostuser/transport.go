package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// transport is the session's side of the unix socket. *net.UnixConn
// implements it; Go's net package sets close-on-exec on received fds
// (MSG_CMSG_CLOEXEC on Linux, fcntl elsewhere).
type transport interface {
	ReadMsgUnix(b, oob []byte) (n, oobn, flags int, addr *net.UnixAddr, err error)
	Write(b []byte) (int, error)
	Close() error
}

// fdSet holds the fds that arrived with one message. A handler keeps an fd
// with take; the dispatcher closes the others (spec "Communication": fds a
// request does not use are the backend's to close).
type fdSet struct {
	fds      [maxFDs]int
	kept     [maxFDs]bool
	n        int
	overflow bool // more than maxFDs arrived (the extra ones are closed already)
}

// len returns the number of fds received, counting the ones beyond maxFDs.
func (f *fdSet) len() int {
	if f.overflow {
		return maxFDs + 1
	}
	return f.n
}

func (f *fdSet) add(fd int) {
	if f.n == maxFDs {
		_ = unix.Close(fd)
		f.overflow = true
		return
	}
	f.fds[f.n] = fd
	f.kept[f.n] = false
	f.n++
}

// take hands fd i over to the caller, who must close it.
func (f *fdSet) take(i int) int {
	f.kept[i] = true
	return f.fds[i]
}

// closeRest closes every fd not taken and empties the set.
func (f *fdSet) closeRest() {
	for i := 0; i < f.n; i++ {
		if !f.kept[i] {
			_ = unix.Close(f.fds[i])
		}
		f.kept[i] = false
	}
	f.n = 0
	f.overflow = false
}

// oobSize has room for 4*maxFDs fds: more than any request takes, so a
// frontend that sends too many has them received here and closed (fdSet),
// rather than relying on the kernel to drop what does not fit (it does,
// with MSG_CTRUNC; user-mode emulators such as qemu-user may not).
var oobSize = unix.CmsgSpace(4 * maxFDs * 4)

// errCleanEOF is a disconnect at a message boundary: not a frontend error.
var errCleanEOF = errors.New("frontend closed the connection")

// isDisconnect reports whether err says the frontend went away (it closed
// or crashed while we read or replied): a disconnect, not a protocol error.
func isDisconnect(err error) bool {
	return errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)
}

// readFull fills b from the socket, collecting the fds that arrive on the
// way into fds. atBoundary says b starts a message: an EOF before its first
// byte is then a clean disconnect.
func readFull(t transport, b, oob []byte, fds *fdSet, atBoundary bool) error {
	first := atBoundary
	for len(b) > 0 {
		n, oobn, flags, _, err := t.ReadMsgUnix(b, oob)
		if oobn > 0 {
			if perr := collectFDs(oob[:oobn], fds); perr != nil && err == nil {
				err = perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			fds.overflow = true
		}
		// On an error n may be -1 (the raw syscall result).
		n = max(0, min(n, len(b)))
		b = b[n:]
		if err != nil {
			if errors.Is(err, io.EOF) && first && n == 0 {
				return errCleanEOF
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: connection closed inside a message", ErrBadHeader)
			}
			return err
		}
		if n == 0 {
			if first {
				return errCleanEOF
			}
			return fmt.Errorf("%w: connection closed inside a message", ErrBadHeader)
		}
		first = false
	}
	return nil
}

// collectFDs moves the fds of every SCM_RIGHTS message in oob into fds.
func collectFDs(oob []byte, fds *fdSet) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("%w: control message: %w", ErrBadFDs, err)
	}
	var bad error
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			// Not SCM_RIGHTS (credentials, say): nothing to close.
			bad = fmt.Errorf("%w: unexpected control message: %w", ErrBadFDs, err)
			continue
		}
		for _, fd := range got {
			fds.add(fd)
		}
	}
	return bad
}
