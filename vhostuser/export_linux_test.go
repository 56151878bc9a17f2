package vhostuser

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ShrinkSealed exports shrinkSealed for tests.
var ShrinkSealed = shrinkSealed

// ShortenCallWatch sets the call watchdog's tick to d for t.
func ShortenCallWatch(t interface{ Cleanup(func()) }, d time.Duration) {
	old := watchTick.Load()
	watchTick.Store(int64(d))
	t.Cleanup(func() { watchTick.Store(old) })
}

// SkipWithoutNoWait skips t where reads and writes cannot ask for
// RWF_NOWAIT (preadv2 on an eventfd, pwritev2 on a pipe): kernels before
// 5.12, and qemu-aarch64-static 7.2, which has neither call (ENOSYS).
// There a frontend that clears O_NONBLOCK on its kick fd can still make a
// read wait, and what the tests that call it check does not hold.
func SkipWithoutNoWait(t testing.TB) {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var b [8]byte
	if _, err := unix.Preadv2(fd, [][]byte{b[:]}, -1, unix.RWF_NOWAIT); err == unix.ENOSYS || err == unix.EOPNOTSUPP {
		t.Skipf("preadv2 RWF_NOWAIT on an eventfd: %v", err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.Pwritev2(p[1], [][]byte{b[:]}, -1, unix.RWF_NOWAIT); err == unix.ENOSYS || err == unix.EOPNOTSUPP {
		t.Skipf("pwritev2 RWF_NOWAIT on a pipe: %v", err)
	}
}
