//go:build linux

package blockpoll

import (
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func pipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK))
	t.Cleanup(func() {
		_ = unix.Close(p[0])
		_ = unix.Close(p[1])
	})
	return p[0], p[1]
}

func TestPoll(t *testing.T) {
	r, w := pipe(t)
	r2, _ := pipe(t)
	_, err := unix.Write(w, []byte{1})
	require.NoError(t, err)
	fds := []unix.PollFd{{Fd: int32(r2), Events: unix.POLLIN}, {Fd: int32(r), Events: unix.POLLIN}}
	n, err := Poll(fds)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Zero(t, fds[0].Revents)
	require.Equal(t, int16(unix.POLLIN), fds[1].Revents)

	// A hung-up pipe is reported in revents, as poll(2) does.
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	defer unix.Close(p[0])
	require.NoError(t, unix.Close(p[1]))
	fds = []unix.PollFd{{Fd: int32(p[0]), Events: unix.POLLIN}}
	n, err = Poll(fds)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NotZero(t, fds[0].Revents&unix.POLLHUP, "the write end is closed")

	n, err = Poll(nil)
	require.ErrorIs(t, err, unix.EINVAL)
	require.Zero(t, n)
}

// TestPollWakes: a goroutine blocked in Poll wakes when its fd becomes
// readable, and the rest of the process runs meanwhile (race detector).
func TestPollWakes(t *testing.T) {
	r, w := pipe(t)
	done := make(chan error, 1)
	go func() {
		fds := []unix.PollFd{{Fd: int32(r), Events: unix.POLLIN}}
		_, err := Poll(fds)
		if err == nil && fds[0].Revents&unix.POLLIN == 0 {
			err = unix.EAGAIN
		}
		done <- err
	}()
	time.Sleep(5 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Poll returned before the fd was readable: %v", err)
	default:
	}
	_, err := unix.Write(w, []byte{1})
	require.NoError(t, err)
	require.NoError(t, <-done)
}

// TestPollGivesUpP: with one P, a goroutine that goes to sleep in Poll lets
// the runnable goroutine run at once. With a plain blocking system call
// (unix.Poll) that goroutine waits until sysmon takes the P back, which it
// does the second time it sees the same call: 10-20 ms once sysmon has
// backed off to its 10 ms period, as it has after the busy loop below (it
// backs off after 1 ms without anything to take). The handoff here takes a
// thread wake-up (tens of microseconds, a few milliseconds on a loaded
// machine); the test takes the median of 7 and allows 8 ms
// (unix.Poll: 15.7 ms median, 5.7 ms the shortest, on the test machine).
func TestPollGivesUpP(t *testing.T) {
	if testing.Short() {
		t.Skip("about 0.3 s of busy loop")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var delays []time.Duration
	for range 7 {
		r, w := pipe(t)
		// Keep the one P busy for 30 ms with nothing for sysmon to
		// retake, so that it is at its longest period when the poll
		// begins.
		for start := time.Now(); time.Since(start) < 30*time.Millisecond; {
		}
		var entered atomic.Int64
		done := make(chan error, 1)
		go func() {
			fds := []unix.PollFd{{Fd: int32(r), Events: unix.POLLIN}}
			entered.Store(time.Now().UnixNano())
			_, err := Poll(fds)
			done <- err
		}()
		for entered.Load() == 0 {
			runtime.Gosched() // the goroutine above runs, then sleeps in Poll
		}
		delays = append(delays, time.Duration(time.Now().UnixNano()-entered.Load()))
		_, err := unix.Write(w, []byte{1})
		require.NoError(t, err)
		require.NoError(t, <-done)
	}
	slices.Sort(delays)
	t.Logf("delays until the runnable goroutine ran: %v", delays)
	require.Less(t, delays[len(delays)/2], 8*time.Millisecond,
		"the goroutine sleeping in Poll held the only P: %v", delays)
}
