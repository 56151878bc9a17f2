//go:build !linux

package virtio_test

// threadCPU is 0 where the thread's CPU time is not read (see the Linux
// version).
func threadCPU() int64 { return 0 }
