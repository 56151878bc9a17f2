//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "vs-dpdk: Linux only (DPDK's vhost-user and virtio_user, /proc)")
	os.Exit(1)
}
