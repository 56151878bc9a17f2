//go:build linux

package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// backendBin is the vhost-arcnet binary, built once per test binary.
var backendBin struct {
	sync.Mutex
	dir  string // temporary directory of a built binary, removed by Cleanup
	path string
	err  error
}

// BackendBinary returns the vhost-arcnet binary: $ARCNET_BIN if set, else
// `go build ./cmd/vhost-arcnet` from the module root, once per process.
func BackendBinary() (string, error) {
	backendBin.Lock()
	defer backendBin.Unlock()
	if backendBin.path != "" || backendBin.err != nil {
		return backendBin.path, backendBin.err
	}
	if p := os.Getenv("ARCNET_BIN"); p != "" {
		backendBin.path = p
		return p, nil
	}
	backendBin.path, backendBin.err = buildBackend()
	return backendBin.path, backendBin.err
}

func buildBackend() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "arcnet-bin-")
	if err != nil {
		return "", err
	}
	backendBin.dir = dir
	bin := filepath.Join(dir, "vhost-arcnet")
	cmd := exec.Command(goTool(), "build", "-buildvcs=false", "-o", bin, "./cmd/vhost-arcnet")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/vhost-arcnet: %w\n%s", err, out)
	}
	return bin, nil
}

// Cleanup removes what the package built for the whole process (the
// backend binary); TestMain calls it after the tests.
func Cleanup() {
	backendBin.Lock()
	defer backendBin.Unlock()
	if backendBin.dir != "" {
		os.RemoveAll(backendBin.dir)
		backendBin.dir = ""
	}
}

// LogRecord is one JSON log record of vhost-arcnet (--log-format json).
type LogRecord map[string]any

// Msg returns the record's message.
func (r LogRecord) Msg() string { s, _ := r["msg"].(string); return s }

// String returns the value of key if it is a string.
func (r LogRecord) String(key string) string { s, _ := r[key].(string); return s }

// Uint returns the value of key if it is a non-negative integer.
func (r LogRecord) Uint(key string) (uint64, bool) {
	n, ok := r[key].(json.Number)
	if !ok {
		return 0, false
	}
	var v uint64
	if _, err := fmt.Sscan(n.String(), &v); err != nil {
		return 0, false
	}
	return v, true
}

// PortStats is one msg="port stats" record: the switch's view of a port
// (for a guest port, rx = frames the guest transmitted, tx = frames the
// backend wrote into the guest's RX queue).
type PortStats struct {
	Port      string
	RxPackets uint64
	RxBytes   uint64
	TxPackets uint64
	TxBytes   uint64
	Drops     map[string]uint64 // drop_<reason> counters, by reason
}

// parsePortStats reads a msg="port stats" record.
func parsePortStats(r LogRecord) (PortStats, error) {
	s := PortStats{Port: r.String("port"), Drops: map[string]uint64{}}
	if s.Port == "" {
		return s, fmt.Errorf("port stats record without port: %v", r)
	}
	for key, dst := range map[string]*uint64{
		"rx_packets": &s.RxPackets, "rx_bytes": &s.RxBytes,
		"tx_packets": &s.TxPackets, "tx_bytes": &s.TxBytes,
	} {
		v, ok := r.Uint(key)
		if !ok {
			return s, fmt.Errorf("port stats of %s: no %s: %v", s.Port, key, r)
		}
		*dst = v
	}
	for k := range r {
		if reason, ok := strings.CutPrefix(k, "drop_"); ok {
			if v, ok := r.Uint(k); ok {
				s.Drops[reason] = v
			}
		}
	}
	return s, nil
}

// Backend is a running vhost-arcnet process.
type Backend struct {
	Name string
	t    *testing.T
	cmd  *exec.Cmd
	log  *os.File

	mu      sync.Mutex
	changed chan struct{}
	lines   []Line      // stderr, every line
	records []LogRecord // the lines that are JSON records
	exited  bool
	exitErr error
	done    chan struct{}
	start   time.Time
}

// RequireBackend builds the vhost-arcnet binary now (once per process) and
// fails the test if it does not build: tests that start QEMU first call it
// so that the build does not eat into the guest's timeout.
func (e *Env) RequireBackend() {
	e.t.Helper()
	if _, err := BackendBinary(); err != nil {
		e.t.Fatalf("vhost-arcnet binary: %v", err)
	}
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
	bin, err := BackendBinary()
	if err != nil {
		t.Fatalf("vhost-arcnet binary: %v", err)
	}
	var sockets []string
	for i, a := range args {
		if a == "--socket" && i+1 < len(args) {
			sockets = append(sockets, args[i+1])
		} else if s, ok := strings.CutPrefix(a, "--socket="); ok {
			sockets = append(sockets, s)
		}
	}
	args = append([]string{"--log-format", "json", "--log-level", "debug"}, args...)
	logf, err := os.Create(e.Path(name + ".backend.log"))
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append(append([]string{}, wrap...), bin), args...)
	fmt.Fprintf(logf, "# %s\n", strings.Join(argv, " "))
	b := &Backend{Name: name, t: t, log: logf, changed: make(chan struct{}), done: make(chan struct{})}
	b.cmd = exec.Command(argv[0], argv[1:]...)
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	b.cmd.Stdout = logf
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.start = time.Now()
	if err := b.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start vhost-arcnet: %v", err)
	}
	go func() {
		b.read(stderr)
		err := b.cmd.Wait()
		b.mu.Lock()
		b.exited, b.exitErr = true, err
		b.broadcastLocked()
		b.mu.Unlock()
		close(b.done)
	}()
	t.Cleanup(func() {
		b.mu.Lock()
		exited := b.exited
		b.mu.Unlock()
		if !exited {
			b.stop(5 * time.Second) //nolint:errcheck // the test already decided
		}
		if t.Failed() {
			t.Logf("backend %s (%s): log (last 40 lines):\n%s", b.Name, b.state(), b.Tail(40))
		}
		logf.Close()
	})
	t.Logf("backend %s: started vhost-arcnet (pid %d) %s", name, b.cmd.Process.Pid, strings.Join(argv[len(wrap):], " "))
	for _, s := range sockets {
		if _, _, err := b.WaitRecord(func(r LogRecord) bool {
			return r.Msg() == "listening" && r.String("path") == s
		}, 0, 15*time.Second); err != nil {
			t.Fatalf("backend %s: no msg=listening path=%s: %v", name, s, err)
		}
	}
	return b
}

func (b *Backend) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		text := sc.Text()
		l := Line{At: time.Since(b.start), Text: text}
		var rec LogRecord
		dec := json.NewDecoder(strings.NewReader(text))
		dec.UseNumber()
		if dec.Decode(&rec) != nil {
			rec = nil
		}
		b.mu.Lock()
		b.lines = append(b.lines, l)
		if rec != nil {
			b.records = append(b.records, rec)
		}
		fmt.Fprintln(b.log, text)
		b.broadcastLocked()
		b.mu.Unlock()
	}
	io.Copy(io.Discard, r) //nolint:errcheck // drain after an overlong line
}

func (b *Backend) broadcastLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// WaitRecord waits for a log record at index from or later that match
// accepts; it returns the record and its index. It fails when the process
// exits first or after timeout.
func (b *Backend) WaitRecord(match func(LogRecord) bool, from int, timeout time.Duration) (LogRecord, int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		for i := from; i < len(b.records); i++ {
			if match(b.records[i]) {
				r := b.records[i]
				b.mu.Unlock()
				return r, i, nil
			}
		}
		from = max(from, len(b.records))
		exited, changed := b.exited, b.changed
		b.mu.Unlock()
		if exited {
			return nil, 0, fmt.Errorf("backend %s exited (%s)", b.Name, b.state())
		}
		select {
		case <-changed:
		case <-deadline.C:
			return nil, 0, fmt.Errorf("backend %s: timed out after %v", b.Name, timeout)
		}
	}
}

// Records returns a copy of the log records so far.
func (b *Backend) Records() []LogRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]LogRecord(nil), b.records...)
}

// Stats asks for the port counters (SIGUSR1) and returns the records printed
// in answer, by port. A backend without ports prints none: the map is then
// empty after a short wait.
func (b *Backend) Stats() (map[string]PortStats, error) {
	b.mu.Lock()
	from := len(b.records)
	b.mu.Unlock()
	if err := b.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return nil, fmt.Errorf("backend %s: SIGUSR1: %w", b.Name, err)
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
		s, err := parsePortStats(r)
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
	deadline := time.Now().Add(timeout)
	for {
		s, err := b.Stats()
		if err != nil {
			return s, err
		}
		if ok(s) {
			return s, nil
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
	return b.stop(10 * time.Second)
}

func (b *Backend) stop(timeout time.Duration) (map[string]PortStats, error) {
	b.mu.Lock()
	from := len(b.records)
	b.mu.Unlock()
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return nil, fmt.Errorf("backend %s: SIGTERM: %w", b.Name, err)
	}
	select {
	case <-b.done:
	case <-time.After(timeout):
		_ = b.cmd.Process.Kill()
		<-b.done
		return nil, fmt.Errorf("backend %s: no exit %v after SIGTERM, killed", b.Name, timeout)
	}
	// The process is gone and its stderr read to the end: every record is in.
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]PortStats{}
	for _, r := range b.records[from:] {
		if r.Msg() != "port stats" {
			continue
		}
		s, err := parsePortStats(r)
		if err != nil {
			return out, err
		}
		out[s.Port] = s
	}
	if b.exitErr != nil {
		return out, fmt.Errorf("backend %s: exit after SIGTERM: %w", b.Name, b.exitErr)
	}
	return out, nil
}

func (b *Backend) state() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.exited:
		return "running"
	case b.exitErr != nil:
		return "exited: " + b.exitErr.Error()
	default:
		return "exited: 0"
	}
}

// Tail returns the last n lines of the backend's log.
func (b *Backend) Tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return tailLines(b.lines, n)
}

// Grep returns the log lines that contain s.
func (b *Backend) Grep(s string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range b.lines {
		if strings.Contains(l.Text, s) {
			out = append(out, l.Text)
		}
	}
	return out
}
