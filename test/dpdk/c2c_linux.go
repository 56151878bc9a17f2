package dpdk

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// C2CRoundTrip measures how long one cache line takes to go from CPU a to
// CPU b and back: two threads pinned one to each CPU take turns storing to
// the line, each waiting for the other's store. It returns the median of 5
// rounds of 20,000 round trips.
//
// Why it is measured (issue 14): on the test machine, a VM, whole runs of
// either backend land in modes 2-3x apart, and the mode follows this
// figure: 100-190 ns a round trip in the fast runs, 400-670 ns in the slow
// ones (the hypervisor puts the two vCPUs close to or far from each
// other). Every frame crosses between the frontend's CPU and the
// backend's several times (ring indexes, descriptors, the frame's own
// lines), so a ratio between backends holds only within one mode.
func C2CRoundTrip(a, b int) (time.Duration, error) {
	const n, rounds = 20000, 5
	// Both threads run Go code at once: two Ps at least for the length of
	// the measurement (vs-dpdk runs with one).
	if p := runtime.GOMAXPROCS(0); p < 2 {
		runtime.GOMAXPROCS(2)
		defer runtime.GOMAXPROCS(p)
	}
	var res []time.Duration
	for range rounds {
		d, err := c2cOnce(a, b, n)
		if err != nil {
			return 0, err
		}
		res = append(res, d)
	}
	slices.Sort(res)
	return res[rounds/2], nil
}

// errC2CStuck: the other thread did not answer within a second (its CPU
// busy with something else).
var errC2CStuck = errors.New("c2c: no answer from the other CPU within 1 s")

func c2cOnce(a, b, n int) (time.Duration, error) {
	var line struct {
		_ [64]byte
		v atomic.Uint64
		_ [56]byte
	}
	var stop atomic.Bool
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := pinThread(b); err != nil {
			stop.Store(true)
			errc <- err
			return
		}
		for i := uint64(1); i <= uint64(n); i++ {
			for line.v.Load() != 2*i-1 {
				if stop.Load() {
					errc <- nil
					return
				}
			}
			line.v.Store(2 * i)
		}
		errc <- nil
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		stop.Store(true)
		<-errc
		return 0, fmt.Errorf("c2c: %w", err)
	}
	defer func() { _ = unix.SchedSetaffinity(0, &all) }()
	if err := pinThread(a); err != nil {
		stop.Store(true)
		<-errc
		return 0, err
	}
	start := time.Now()
	for i := uint64(1); i <= uint64(n); i++ {
		line.v.Store(2*i - 1)
		for spins := 0; line.v.Load() != 2*i; spins++ {
			if stop.Load() { // the other thread could not start
				return 0, <-errc
			}
			if spins&0xffff == 0xffff && time.Since(start) > time.Second {
				stop.Store(true)
				<-errc
				return 0, errC2CStuck
			}
		}
	}
	d := time.Since(start)
	if err := <-errc; err != nil {
		return 0, err
	}
	return d / time.Duration(n), nil
}

func pinThread(cpu int) error {
	var s unix.CPUSet
	s.Set(cpu)
	if err := unix.SchedSetaffinity(0, &s); err != nil {
		return fmt.Errorf("c2c: pin to CPU %d: %w", cpu, err)
	}
	return nil
}

// C2CString is the runs' round trips in nanoseconds, "N,N,..", NA where
// none was measured.
func (rs Runs) C2CString() string {
	if len(rs) == 0 {
		return "NA"
	}
	var parts []string
	for _, r := range rs {
		if r.C2C <= 0 {
			parts = append(parts, "NA")
			continue
		}
		parts = append(parts, fmt.Sprint(r.C2C.Nanoseconds()))
	}
	return strings.Join(parts, ",")
}
