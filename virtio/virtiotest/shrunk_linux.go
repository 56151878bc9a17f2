//go:build linux

package virtiotest

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// ShrinkableMapping maps a memfd of size bytes shared, watches it as
// vhostuser watches guest memory (virtio.WatchFaults), and returns the
// mapping, a count of how often the watch was told of a fault, and shrink,
// which truncates the file to 0: every access to the mapping faults after
// it, as when a frontend shrinks the file behind its guest memory.
// Everything is released at the end of the test.
func ShrinkableMapping(t testing.TB, size int) (b []byte, told *int, shrink func()) {
	t.Helper()
	fd, err := unix.MemfdCreate("shrinkable", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	b, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	told = new(int)
	w := virtio.WatchFaults(b, func(*virtio.Fault) { *told++ })
	t.Cleanup(func() { w.Stop(); _ = unix.Munmap(b) })
	return b, told, func() {
		if err := unix.Ftruncate(fd, 0); err != nil {
			t.Fatal(err)
		}
	}
}
