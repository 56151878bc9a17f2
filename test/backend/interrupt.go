package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Interrupts. Ctrl-C sends SIGINT to the whole foreground process group:
// the go command (which ignores it and waits for the test binary), the test
// binary, vhost-arcnet and QEMU. Without a handler the test binary dies at
// once and no t.Cleanup runs: the namespaces made with `ip netns add` and
// the temporary directories stay. [Main] catches SIGINT and SIGTERM
// instead:
//
//   - The first signal closes [Interrupted]: the running test's waits
//     (WaitRecord, the QEMU guests' waits, the image build) return an
//     "interrupted" error, vhost-arcnet gets SIGTERM and QEMU is killed, so
//     the test fails and its t.Cleanup functions run (namespaces deleted,
//     processes stopped, directories removed). Tests that start later skip.
//   - A second signal, or clean-ups that take longer than [graceTimeout],
//     run the last-resort undos ([LastResort]: kill the processes the tests
//     started, by PID; delete the namespaces they made; remove their
//     directories) and exit.
//
// Either way the test binary exits non-zero (128 + the signal's number).

// graceTimeout bounds the clean-ups after the first signal: a backend's
// SIGTERM wait (10 s) and a namespace's deletion fit in it.
const graceTimeout = 45 * time.Second

// reapTimeout bounds a last-resort undo's wait for a process it killed.
const reapTimeout = 5 * time.Second

var intr = struct {
	ch   chan struct{} // closed at the first signal
	once sync.Once

	mu    sync.Mutex
	sig   os.Signal
	next  int
	undos map[int]func()
}{ch: make(chan struct{}), undos: map[int]func(){}}

// Main runs the tests (m.Run) with SIGINT and SIGTERM caught (see above),
// then runs the last-resort undos still registered and Cleanup, and returns
// the exit code for os.Exit: m.Run's, or 128 + the signal's number after
// an interrupt.
func Main(m *testing.M) int {
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	go watch(sigc)
	code := m.Run()
	runUndos()
	Cleanup()
	if s := signalOf(); s != nil {
		fmt.Fprintf(os.Stderr, "=== %s: the interrupted tests cleaned up\n", signalName(s))
		return exitCode(s)
	}
	return code
}

// watch waits for the first signal, interrupts, then waits for a second
// signal or the grace timeout to run the last-resort undos and exit.
func watch(sigc chan os.Signal) {
	sig := <-sigc
	Interrupt(sig)
	fmt.Fprintf(os.Stderr, "\n=== %s: interrupted; the running test stops and cleans up "+
		"(namespaces, processes, directories); %s again to skip to killing and deleting at once\n",
		signalName(sig), signalName(sig))
	select {
	case s := <-sigc:
		fmt.Fprintf(os.Stderr, "=== %s again: killing the tests' processes and deleting their namespaces now\n", signalName(s))
	case <-time.After(graceTimeout):
		fmt.Fprintf(os.Stderr, "=== clean-ups still running after %v: killing the tests' processes and deleting their namespaces now\n", graceTimeout)
	}
	runUndos()
	Cleanup()
	os.Exit(exitCode(sig))
}

// Interrupt closes Interrupted as if sig had arrived (Main calls it at the
// first SIGINT or SIGTERM). Later calls do nothing.
func Interrupt(sig os.Signal) {
	intr.once.Do(func() {
		intr.mu.Lock()
		intr.sig = sig
		intr.mu.Unlock()
		close(intr.ch)
	})
}

// Interrupted is closed at the first SIGINT or SIGTERM (under Main).
func Interrupted() <-chan struct{} { return intr.ch }

// InterruptErr is nil before the first signal, then an error that says
// which signal interrupted the tests.
func InterruptErr() error {
	if s := signalOf(); s != nil {
		return fmt.Errorf("%w (%s)", ErrInterrupted, signalName(s))
	}
	return nil
}

// ErrInterrupted is what InterruptErr's errors match (errors.Is).
var ErrInterrupted = errors.New("interrupted")

// InterruptContext returns a context canceled at the first signal, for
// commands and builds that take a context.
func InterruptContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-intr.ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// SkipIfInterrupted skips a test that starts (or starts something) after an
// interrupt.
func SkipIfInterrupted(t testing.TB) {
	t.Helper()
	if err := InterruptErr(); err != nil {
		t.Skipf("%v: not starting", err)
	}
}

// LastResort registers undo to run if the clean-ups after an interrupt do
// not finish (a second signal, or the grace timeout) and after the tests
// for what is still registered; it returns the function that unregisters
// it, which the normal clean-up calls once the thing is gone. Undos run in
// the reverse order of their registration, like t.Cleanup, so a process
// is killed before its namespace is deleted and its directory removed.
func LastResort(undo func()) (forget func()) {
	intr.mu.Lock()
	id := intr.next
	intr.next++
	intr.undos[id] = undo
	intr.mu.Unlock()
	return func() {
		intr.mu.Lock()
		delete(intr.undos, id)
		intr.mu.Unlock()
	}
}

// runUndos runs (once each) the undos still registered, newest first.
func runUndos() {
	intr.mu.Lock()
	undos := make([]func(), 0, len(intr.undos))
	for i := intr.next - 1; i >= 0; i-- {
		if u, ok := intr.undos[i]; ok {
			undos = append(undos, u)
			delete(intr.undos, i)
		}
	}
	intr.mu.Unlock()
	for _, u := range undos {
		u()
	}
}

func signalOf() os.Signal {
	intr.mu.Lock()
	defer intr.mu.Unlock()
	return intr.sig
}

func signalName(s os.Signal) string {
	switch s {
	case os.Interrupt:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.String()
}

func exitCode(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 1
}
