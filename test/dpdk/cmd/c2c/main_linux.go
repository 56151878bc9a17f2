//go:build linux

// Command c2c prints the round trip of one cache line between two CPUs in
// nanoseconds (dpdk.C2CRoundTrip): which mode the test VM is in (issue
// 14: 100-190 ns when its vCPUs are close, 400 ns and more when far).
//
//	c2c [CPU_A CPU_B]   (default 0 1)
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/arcnet/vhost-arcnet/test/dpdk"
)

func main() {
	a, b := 0, 1
	if len(os.Args) == 3 {
		var errA, errB error
		a, errA = strconv.Atoi(os.Args[1])
		b, errB = strconv.Atoi(os.Args[2])
		if errA != nil || errB != nil || a < 0 || b < 0 {
			fmt.Fprintln(os.Stderr, "usage: c2c [CPU_A CPU_B]")
			os.Exit(2)
		}
	} else if len(os.Args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: c2c [CPU_A CPU_B]")
		os.Exit(2)
	}
	d, err := dpdk.C2CRoundTrip(a, b)
	if err != nil {
		fmt.Fprintln(os.Stderr, "c2c:", err)
		os.Exit(1)
	}
	fmt.Println(d.Nanoseconds())
}
