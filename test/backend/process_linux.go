//go:build linux

package backend

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Bounds of the waits (not timed assertions: each only stops a wait for
// something that normally takes well under a second).
const (
	listenTimeout  = 15 * time.Second // start to msg="listening"
	cleanupTimeout = 10 * time.Second // SIGTERM to exit when the test ends
	tailOnFailure  = 40               // log lines a failed test shows
)

// Config describes one vhost-arcnet run.
type Config struct {
	// Name names the process in messages (and the test log).
	Name string
	// Args are vhost-arcnet's arguments; Start puts --log-format json in
	// front of them.
	Args []string
	// Wrap, if set, is a command that execs its last argument with the
	// rest, run around vhost-arcnet (so the PID stays vhost-arcnet's, which
	// receives the signals): for example []string{"ip", "netns", "exec",
	// NS} runs it inside the network namespace NS.
	Wrap []string
	// Log, if set, receives the command line, then the process's stdout and
	// every line of its stderr.
	Log io.Writer
}

// Process is a running vhost-arcnet.
type Process struct {
	Name  string
	cmd   *exec.Cmd
	start time.Time
	log   io.Writer

	mu      sync.Mutex
	changed chan struct{} // closed and replaced at every line and at the exit
	lines   []Line        // stderr, every line
	records []Record      // the lines that are JSON records
	exited  bool
	exitErr error
	done    chan struct{} // closed once the exit and every record are in

	// termSent is set by the first SIGTERM the harness sends (terminate):
	// the interrupt watcher and the clean-up may both decide to stop the
	// process, and a second SIGTERM would kill it before it removes what
	// it made (CI: sigterm-test-binary, the watcher's SIGTERM after its
	// grace and the clean-up's own after the same grace, 0.1 s apart).
	termSent atomic.Bool
}

// Start starts vhost-arcnet (Binary) with c.Args and waits until it listens
// on every --socket. It is stopped (SIGTERM, then SIGKILL by its PID) when
// the test ends if it still runs, and a failed test logs the end of its log.
func Start(t testing.TB, c Config) *Process {
	t.Helper()
	SkipIfInterrupted(t)
	bin := RequireBinary(t)
	var sockets []string
	for i, a := range c.Args {
		if a == "--socket" && i+1 < len(c.Args) {
			sockets = append(sockets, c.Args[i+1])
		} else if s, ok := strings.CutPrefix(a, "--socket="); ok {
			sockets = append(sockets, s)
		}
	}
	args := append([]string{"--log-format", "json"}, c.Args...)
	argv := append(append(append([]string{}, c.Wrap...), bin), args...)
	p := &Process{Name: c.Name, log: c.Log, changed: make(chan struct{}), done: make(chan struct{})}
	if p.log == nil {
		p.log = io.Discard
	}
	fmt.Fprintf(p.log, "# %s\n", strings.Join(argv, " "))
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.Stdout = c.Log
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start vhost-arcnet: %v", err)
	}
	// If the clean-ups after an interrupt do not finish, the process is
	// killed by its PID (a no-op once it has been waited for) and reaped.
	forget := LastResort(func() {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(reapTimeout):
		}
	})
	go func() {
		p.read(stderr)
		err := p.cmd.Wait()
		p.mu.Lock()
		p.exited, p.exitErr = true, err
		p.broadcastLocked()
		p.mu.Unlock()
		close(p.done)
		forget()
	}()
	go p.stopOnInterrupt()
	t.Cleanup(func() {
		if !p.Exited() {
			if p.stoppingAfterInterrupt() {
				// Stopping on its own (a Ctrl-C reached it too): a
				// SIGTERM now would kill it before it removes its TAP
				// and nftables table.
				p.waitExit(cleanupTimeout)
			} else {
				p.Stop(cleanupTimeout) //nolint:errcheck // the test already decided
			}
		}
		if t.Failed() {
			t.Logf("backend %s (%s): log (last %d lines):\n%s", p.Name, p.State(), tailOnFailure, p.Tail(tailOnFailure))
		}
	})
	t.Logf("backend %s: started vhost-arcnet (pid %d) %s", p.Name, p.Pid(), strings.Join(argv[len(c.Wrap):], " "))
	for _, s := range sockets {
		if _, _, err := p.WaitRecord(func(r Record) bool {
			return r.Msg() == "listening" && r.String("path") == s
		}, 0, listenTimeout); err != nil {
			t.Fatalf("backend %s: no msg=listening path=%s: %v", p.Name, s, err)
		}
	}
	return p
}

// stopOnInterrupt stops the process (SIGTERM) at an interrupt unless it
// stops by itself within interruptGrace: a Ctrl-C reaches it too, and then
// a second signal would kill it before it removes what it made.
func (p *Process) stopOnInterrupt() {
	select {
	case <-p.done:
		return
	case <-intr.ch:
	}
	if _, _, err := p.waitRecord(isStopping, 0, interruptGrace, false); err == nil || p.Exited() {
		return
	}
	_ = p.terminate()
}

// terminate sends SIGTERM unless the harness sent it before: vhost-arcnet
// takes a second signal as "stop now" and dies by it.
func (p *Process) terminate() error {
	if p.termSent.Swap(true) {
		return nil
	}
	return p.Signal(syscall.SIGTERM)
}

// interruptGrace is how long a backend has, after an interrupt, to log
// that it stops before it is sent SIGTERM.
const interruptGrace = 2 * time.Second

func isStopping(r Record) bool { return r.Msg() == "stopping" }

// stopping reports whether the process logged msg=stopping: it got SIGINT
// or SIGTERM and is on its way out.
func (p *Process) stopping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.records {
		if isStopping(r) {
			return true
		}
	}
	return false
}

// stoppingAfterInterrupt reports whether the process is stopping on its
// own. After an interrupt it waits up to interruptGrace for msg=stopping,
// as stopOnInterrupt does: a Ctrl-C reaches the test binary and the backend
// at the same moment, so the test can fail and reach its clean-up before the
// backend's line is read, and a SIGTERM then would be the backend's second
// signal (CI run of stop 20: TAP and nftables table left behind).
func (p *Process) stoppingAfterInterrupt() bool {
	if p.stopping() {
		return true
	}
	select {
	case <-intr.ch:
	default:
		return false
	}
	_, _, err := p.waitRecord(isStopping, 0, interruptGrace, false)
	return err == nil
}

// waitExit waits up to timeout for the exit, then kills the process by its
// PID.
func (p *Process) waitExit(timeout time.Duration) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *Process) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		text := sc.Text()
		l := Line{At: time.Since(p.start), Text: text}
		rec, isRecord := ParseRecord(text)
		p.mu.Lock()
		p.lines = append(p.lines, l)
		if isRecord {
			p.records = append(p.records, rec)
		}
		fmt.Fprintln(p.log, text)
		p.broadcastLocked()
		p.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r) // drain after an overlong line
}

func (p *Process) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Pid is the vhost-arcnet process's PID (a Wrap command execs it).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// State is "running", "exited: 0" or "exited: " and the exit error.
func (p *Process) State() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		return "running"
	}
	return "exited: " + ExitString(p.exitErr)
}

// WaitRecord waits for a log record at index from or later that match
// accepts; it returns the record and its index. It fails when the process
// exits first, after timeout, or at an interrupt (see Main).
func (p *Process) WaitRecord(match func(Record) bool, from int, timeout time.Duration) (Record, int, error) {
	return p.waitRecord(match, from, timeout, true)
}

func (p *Process) waitRecord(match func(Record) bool, from int, timeout time.Duration, interruptible bool) (Record, int, error) {
	var interrupted <-chan struct{}
	if interruptible {
		interrupted = intr.ch
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for i := from; i < len(p.records); i++ {
			if match(p.records[i]) {
				r := p.records[i]
				p.mu.Unlock()
				return r, i, nil
			}
		}
		from = max(from, len(p.records))
		exited, changed := p.exited, p.changed
		p.mu.Unlock()
		if exited {
			return nil, 0, fmt.Errorf("backend %s exited (%s)", p.Name, p.State())
		}
		select {
		case <-changed:
		case <-deadline.C:
			return nil, 0, fmt.Errorf("backend %s: timed out after %v", p.Name, timeout)
		case <-interrupted:
			return nil, 0, fmt.Errorf("backend %s: %w", p.Name, InterruptErr())
		}
	}
}

// Records returns a copy of the log records so far.
func (p *Process) Records() []Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Record(nil), p.records...)
}

// NumRecords returns the number of log records so far: the index of the
// next one.
func (p *Process) NumRecords() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.records)
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("backend %s: %v: %w", p.Name, sig, err)
	}
	return nil
}

// Counters is what one SIGUSR1 makes vhost-arcnet with a gateway print: a
// msg="port stats" record per port and the msg="gateway stats" record,
// which comes last.
type Counters struct {
	Ports   map[string]Record
	Gateway Record
	// XDP is the "xdp socket stats" record (--uplink xdp: the kernel's
	// drops before vhost-arcnet saw a frame), nil without.
	XDP Record
}

// Counters asks for the counters (SIGUSR1) and waits up to timeout for the
// msg="gateway stats" record that ends the answer.
func (p *Process) Counters(timeout time.Duration) (Counters, error) {
	from := p.NumRecords()
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		return Counters{}, err
	}
	gw, last, err := p.WaitRecord(func(r Record) bool { return r.Msg() == "gateway stats" }, from, timeout)
	if err != nil {
		return Counters{}, fmt.Errorf("no gateway stats: %w", err)
	}
	c := Counters{Ports: map[string]Record{}, Gateway: gw}
	for _, r := range p.Records()[from:last] {
		switch r.Msg() {
		case "port stats":
			c.Ports[r.String("port")] = r
		case "xdp socket stats":
			c.XDP = r
		}
	}
	return c, nil
}

// Stop sends SIGTERM (unless the harness already did) and waits up to timeout for the exit, then kills the
// process by its PID and fails. It returns the exit error otherwise: an exit
// status other than 0 is an error, and so is a process that had already
// exited.
func (p *Process) Stop(timeout time.Duration) error {
	if p.Exited() {
		return fmt.Errorf("backend %s had already exited (%s)", p.Name, p.State())
	}
	if err := p.terminate(); err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("backend %s: no exit %v after SIGTERM, killed", p.Name, timeout)
	}
	if p.exitErr != nil {
		return fmt.Errorf("backend %s: exit after SIGTERM: %w", p.Name, p.exitErr)
	}
	return nil
}

// Tail returns the last n lines of the log.
func (p *Process) Tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return TailLines(p.lines, n)
}

// Grep returns the log lines that contain s.
func (p *Process) Grep(s string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, l := range p.lines {
		if strings.Contains(l.Text, s) {
			out = append(out, l.Text)
		}
	}
	return out
}

// GatewayMAC reads the gateway's MAC from the "guest network" record
// (the guest network's start), waiting up to timeout for it.
func (p *Process) GatewayMAC(timeout time.Duration) ([6]byte, error) {
	var m [6]byte
	r, _, err := p.WaitRecord(func(r Record) bool { return r.Msg() == "guest network" }, 0, timeout)
	if err != nil {
		return m, err
	}
	if _, err := fmt.Sscanf(r.String("gateway_mac"), "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]); err != nil {
		return m, fmt.Errorf("gateway_mac %q: %w", r.String("gateway_mac"), err)
	}
	return m, nil
}
