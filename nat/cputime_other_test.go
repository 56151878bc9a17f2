//go:build !unix

package nat

func cpuSeconds() float64 { return 0 }
