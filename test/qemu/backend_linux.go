//go:build linux

package qemu

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/arcnet/vhost-arcnet/test/backend"
)

// BackendBinary returns the vhost-arcnet binary: $ARCNET_BIN if set, else
// `go build ./cmd/vhost-arcnet` from the module root, once per process.
func BackendBinary() (string, error) { return backend.Binary() }

// Cleanup removes what the package built for the whole process (the
// backend binary); TestMain calls it after the tests.
func Cleanup() { backend.Cleanup() }

// LogRecord is one JSON log record of vhost-arcnet (--log-format json).
type LogRecord = backend.Record

// PortStats is one msg="port stats" record: the switch's view of a port
// (for a guest port, rx = frames the guest transmitted, tx = frames the
// backend wrote into the guest's RX queue).
type PortStats = backend.PortStats

// Backend is a running vhost-arcnet process (WaitRecord, Records, Tail,
// Grep: see backend.Process).
type Backend struct {
	*backend.Process
}

// RequireBackend builds the vhost-arcnet binary now (once per process) and
// fails the test if it does not build: tests that start QEMU first call it
// so that the build does not eat into the guest's timeout.
func (e *Env) RequireBackend() {
	e.t.Helper()
	backend.RequireBinary(e.t)
}

// StartBackend starts vhost-arcnet with args (plus --log-format json
// --log-level debug) and waits until it listens on every --socket. It is
// stopped (SIGTERM, then SIGKILL) when the test ends if Stop was not called.
func (e *Env) StartBackend(name string, args ...string) *Backend {
	e.t.Helper()
	return e.StartBackendWrapped(name, nil, args...)
}

// StartBackendWrapped is StartBackend with the vhost-arcnet command run by
// wrap, a command that execs its last argument with the rest (so the PID
// stays vhost-arcnet's, which receives the signals): for example
// []string{"ip", "netns", "exec", NS} runs it inside the network namespace
// NS, where it creates its TAP, routes and nftables table. Its unix
// sockets live on the file system, so QEMU in the test's own namespace
// still connects to them.
func (e *Env) StartBackendWrapped(name string, wrap []string, args ...string) *Backend {
	t := e.t
	t.Helper()
	logf, err := os.Create(e.Path(name + ".backend.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() }) // after the process is gone: registered first
	return &Backend{backend.Start(t, backend.Config{
		Name: name,
		Args: append([]string{"--log-level", "debug"}, args...),
		Wrap: wrap,
		Log:  logf,
	})}
}

// Stats asks for the port counters (SIGUSR1) and returns the records printed
// in answer, by port. A backend without ports prints none: the map is then
// empty after a short wait.
func (b *Backend) Stats() (map[string]PortStats, error) {
	from := b.NumRecords()
	if err := b.Signal(syscall.SIGUSR1); err != nil {
		return nil, err
	}
	return b.collectStats(from, time.Second)
}

// collectStats gathers the msg="port stats" records from index from on: it
// waits up to first for the first one, then until no more come for 200 ms
// (one signal prints one record per port, all at once).
func (b *Backend) collectStats(from int, first time.Duration) (map[string]PortStats, error) {
	isStats := func(r LogRecord) bool { return r.Msg() == "port stats" }
	out := map[string]PortStats{}
	wait := first
	for {
		r, i, err := b.WaitRecord(isStats, from, wait)
		if err != nil {
			return out, nil // no more records (or the process is gone)
		}
		s, err := backend.ParsePortStats(r)
		if err != nil {
			return out, err
		}
		out[s.Port] = s
		from = i + 1
		wait = 200 * time.Millisecond
	}
}

// WaitStats asks for the counters every 250 ms until ok accepts them, and
// returns the last ones (with an error at timeout).
func (b *Backend) WaitStats(ok func(map[string]PortStats) bool, timeout time.Duration) (map[string]PortStats, error) {
	return waitCounters(b, b.Stats, ok, timeout)
}

// waitCounters calls get every 250 ms until ok accepts what it returns, and
// returns the last answer (with an error at timeout, or get's).
func waitCounters[S any](b *Backend, get func() (S, error), ok func(S) bool, timeout time.Duration) (S, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := get()
		if err != nil || ok(s) {
			return s, err
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("backend %s: counters not as expected after %v: %+v", b.Name, timeout, s)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Stop sends SIGTERM, waits for the exit and returns the port counters the
// backend printed at exit. An exit status other than 0 is an error.
func (b *Backend) Stop() (map[string]PortStats, error) {
	from := b.NumRecords()
	stopErr := b.Process.Stop(10 * time.Second)
	// The process is gone and its stderr read to the end: every record is in.
	out := map[string]PortStats{}
	for _, r := range b.Records()[from:] {
		if r.Msg() != "port stats" {
			continue
		}
		s, err := backend.ParsePortStats(r)
		if err != nil {
			return out, err
		}
		out[s.Port] = s
	}
	return out, stopErr
}
