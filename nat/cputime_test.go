//go:build unix

package nat

import "syscall"

// cpuSeconds returns the CPU time (user + system) the process used so far.
// On a shared, loaded machine the benchmarks divide packets by CPU time as
// well as by wall time: that is the per-core rate.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
