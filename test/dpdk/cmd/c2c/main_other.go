//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "c2c: Linux only (sched_setaffinity)")
	os.Exit(1)
}
