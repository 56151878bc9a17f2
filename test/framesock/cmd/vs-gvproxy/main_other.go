//go:build !linux

// Command vs-gvproxy is Linux only (perf, /proc); see main_linux.go.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "vs-gvproxy: Linux only")
	os.Exit(1)
}
