//go:build linux

package vhostuser

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkDoorbellPingPong: one kick and one wake-up each way between two
// goroutines through eventfd doorbells: the latency floor of a kick.
func BenchmarkDoorbellPingPong(b *testing.B) {
	mk := func() (*doorbell, *callFD) {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			b.Fatal(err)
		}
		fd2, err := unix.Dup(fd)
		if err != nil {
			b.Fatal(err)
		}
		d, err := newFDDoorbell(fd)
		if err != nil {
			b.Fatal(err)
		}
		c, err := newCallFD(fd2, nil)
		if err != nil {
			b.Fatal(err)
		}
		return d, c
	}
	d1, c1 := mk()
	d2, c2 := mk()
	var n1, n2 notifier
	n1.set(c1)
	n2.set(c2)
	defer func() { d1.close(); d2.close(); n1.set(nil); n2.set(nil) }()
	go func() {
		for {
			if d1.Wait() != nil {
				return
			}
			_ = n2.Notify()
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = n1.Notify()
		if err := d2.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	d1.Interrupt()
}
