package vhostusertest

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// A hostile frontend's tools: an error fd per ring, and guest memory that
// shrinks under the backend.

// SetVringErr gives ring idx an error fd (SET_VRING_ERR): an eventfd, or a
// pipe with Options.Pipes. It returns the fd to watch (WaitErr); the
// frontend closes it with Close.
func (f *Frontend) SetVringErr(idx int) (int, error) {
	r, w, err := f.notifierPair()
	if err != nil {
		return -1, err
	}
	if _, err := f.Request(vhostuser.ReqSetVringErr, false, u64(uint64(idx)), w); err != nil {
		return -1, err
	}
	return r, nil
}

// WaitErr waits (up to Timeout) until the error fd fd, from SetVringErr, is
// signalled, and drains it.
func (f *Frontend) WaitErr(fd int) error {
	ok, err := waitReadable(fd, f.opts.Timeout)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("vhostusertest: error fd not signalled: %w", os.ErrDeadlineExceeded)
	}
	_, err = drain(fd, true)
	return err
}

// ErrSignalled reports whether the error fd fd is readable now.
func ErrSignalled(fd int) bool {
	ok, err := waitReadable(fd, 0)
	return err == nil && ok
}

// ShrinkMemory truncates the file behind every guest memory region to 0
// bytes, as a hostile (or broken) frontend may after SET_MEM_TABLE: every
// later access to the memory, the backend's and the frontend's own, faults
// (SIGBUS). The frontend must not touch its rings or buffers after it.
func (f *Frontend) ShrinkMemory() error {
	for _, r := range f.regions {
		if err := unix.Ftruncate(r.fd, 0); err != nil {
			return fmt.Errorf("vhostusertest: ftruncate region at %#x: %w", r.GPA, err)
		}
	}
	return nil
}

// Truncate cuts the file behind the region to size bytes (see
// ShrinkMemory): accesses to the region's pages past size fault.
func (r *Region) Truncate(size int64) error {
	if err := unix.Ftruncate(r.fd, size); err != nil {
		return fmt.Errorf("vhostusertest: ftruncate region at %#x: %w", r.GPA, err)
	}
	return nil
}

// BlockKickFD clears O_NONBLOCK on the kick fd ring idx gave the backend.
// The fd crossed the socket, so the backend's copy shares its open file
// description, and the flag, with the frontend's: the backend's reads of
// it must not wait anyway.
func (f *Frontend) BlockKickFD(idx int) error {
	if err := unix.SetNonblock(f.rings[idx].kickR, false); err != nil {
		return fmt.Errorf("vhostusertest: kick fd of ring %d: %w", idx, err)
	}
	return nil
}

// JamCallFD fills the eventfd counter of ring idx's call fd to its maximum
// (2^64-2) and clears O_NONBLOCK on it, which the backend's copy shares: a
// write of 1 to it then waits until somebody reads the counter. Only with
// eventfds (not Options.Pipes). The frontend's own Calls and WaitCall on
// the ring wait too from then on: use neither.
func (f *Frontend) JamCallFD(idx int) error {
	r := f.rings[idx]
	if !r.evfd {
		return fmt.Errorf("vhostusertest: ring %d's call fd is a pipe", idx)
	}
	var full [8]byte
	nativeEndian.PutUint64(full[:], 1<<64-2)
	// The backend may call between the drain and the write: the counter
	// is then not 0 and the write, nonblocking, fails with EAGAIN; drain
	// and write again.
	deadline := time.Now().Add(f.opts.Timeout)
	for {
		if _, err := drain(r.callR, true); err != nil { // the calls it holds count too
			return err
		}
		_, err := unix.Write(r.callR, full[:])
		if err == nil {
			break
		}
		if err != unix.EAGAIN || time.Now().After(deadline) {
			return fmt.Errorf("vhostusertest: fill call fd of ring %d: %w", idx, err)
		}
	}
	if err := unix.SetNonblock(r.callR, false); err != nil {
		return fmt.Errorf("vhostusertest: call fd of ring %d: %w", idx, err)
	}
	return nil
}
