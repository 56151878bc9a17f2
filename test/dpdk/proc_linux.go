//go:build linux

package dpdk

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/test/backend"
)

// Defaults of the waits (bounds, not timed assertions: each only stops a
// wait for something that normally takes well under a second or two).
const (
	DefaultStopTimeout = 20 * time.Second // SIGINT to exit
	pollEvery          = 50 * time.Millisecond
)

// Proc is a process started by StartProc, with its stdout and stderr in one
// log file.
type Proc struct {
	Name    string
	LogPath string
	Argv    []string
	// StopTimeout bounds Stop's wait before it kills (DefaultStopTimeout if 0).
	StopTimeout time.Duration
	cmd         *exec.Cmd
	done        chan struct{}
	waitErr     error // valid after done is closed
}

// StartProc starts argv with its output in logPath (created or truncated)
// and env added to this process's environment. The child gets its own
// process group (a ^C on the terminal reaches only this process, which then
// stops the child in order) and SIGKILL when this process dies. The caller
// must Stop or Kill it.
func StartProc(name, logPath string, env []string, argv ...string) (*Proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, Argv: argv, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id (exec wrappers such as stdbuf and taskset exec the
// real program: same id).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitErr is the exit error once the process has exited, nil before.
func (p *Proc) WaitErr() error {
	if !p.Exited() {
		return nil
	}
	return p.waitErr
}

// Log returns the log file's content so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Signal sends sig to the process if it is still running.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL unless the process has exited, and waits for it.
func (p *Proc) Kill() {
	if !p.Exited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// WaitFor polls the log until cond holds; it fails when the process exits
// first or after timeout.
func (p *Proc) WaitFor(what string, timeout time.Duration, cond func(log string) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if cond(p.Log()) {
			return nil
		}
		if p.Exited() {
			if cond(p.Log()) {
				return nil
			}
			return fmt.Errorf("%s exited (%v) before %s", p.Name, p.waitErr, what)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %s within %v", p.Name, what, timeout)
		}
		time.Sleep(pollEvery)
	}
}

// Stop sends sig and waits for the exit; after StopTimeout it kills the
// process and returns an error. It returns the process's exit error.
func (p *Proc) Stop(sig syscall.Signal) (exitErr error, err error) {
	if p.Exited() {
		return p.waitErr, fmt.Errorf("%s had already exited (%v)", p.Name, p.waitErr)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return nil, fmt.Errorf("signal %s: %w", p.Name, err)
	}
	timeout := p.StopTimeout
	if timeout == 0 {
		timeout = DefaultStopTimeout
	}
	select {
	case <-p.done:
		return p.waitErr, nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return p.waitErr, fmt.Errorf("%s did not exit within %v of %v; killed", p.Name, timeout, sig)
	}
}

// TestpmdOpts describe one dpdk-testpmd run: no terminal (--stats-period=1),
// no PCI, no telemetry, a private --file-prefix, lcores 0 (main) and 1
// (forwarding) both pinned to CPU.
type TestpmdOpts struct {
	Vdev       string // e.g. net_virtio_user0,path=SOCK,queues=2
	Mode       string // --forward-mode: txonly | rxonly | io
	CPU        int
	FilePrefix string
	Queues     int  // --rxq/--txq when > 1
	TxFirst    bool // --tx-first: send one burst per stream before forwarding (io mode)
	// Taskset runs testpmd under taskset -c CPU, so that its control
	// threads share the CPU too.
	Taskset bool
	Mem     []string // EAL memory arguments; nil: --no-huge -m 128
	EAL     []string // more EAL arguments (--log-level=...)
	Mbufs   int      // --total-num-mbufs; 0: 8192
	App     []string // more application arguments, after --forward-mode
}

// Argv is the command line: testpmd's stdout is a file, so it runs under
// stdbuf -oL to be line-buffered and followed as it runs (stdbuf and
// taskset exec testpmd: same PID).
func (o TestpmdOpts) Argv() []string {
	var argv []string
	if o.Taskset {
		argv = append(argv, "taskset", "-c", strconv.Itoa(o.CPU))
	}
	mem := o.Mem
	if mem == nil {
		mem = []string{"--no-huge", "-m", "128"}
	}
	mbufs := o.Mbufs
	if mbufs == 0 {
		mbufs = 8192
	}
	argv = append(argv, "stdbuf", "-oL", "dpdk-testpmd",
		"--lcores", fmt.Sprintf("0@%d,1@%d", o.CPU, o.CPU),
		"--file-prefix="+o.FilePrefix, "--no-pci", "--no-telemetry")
	argv = append(argv, mem...)
	argv = append(argv, o.EAL...)
	argv = append(argv, "--vdev", o.Vdev, "--",
		"--stats-period=1", "--total-num-mbufs="+strconv.Itoa(mbufs), "--forward-mode="+o.Mode)
	if o.Queues > 1 {
		argv = append(argv, "--rxq="+strconv.Itoa(o.Queues), "--txq="+strconv.Itoa(o.Queues))
	}
	if o.TxFirst {
		argv = append(argv, "--tx-first")
	}
	return append(argv, o.App...)
}

// ArcnetArgv is vhost-arcnet's command line on socket sock, with JSON logs
// at level (the harness reads msg="listening" and msg="port stats").
func ArcnetArgv(bin, sock, level string, args ...string) []string {
	return append([]string{bin, "--socket", sock, "--log-format", "json", "--log-level", level}, args...)
}

// WaitForwarding waits until testpmd has started forwarding on one port.
func WaitForwarding(p *Proc, timeout time.Duration) error {
	err := p.WaitFor("\"packet forwarding - ports=1\"", timeout, func(log string) bool {
		return strings.Contains(log, "packet forwarding - ports=")
	})
	if err != nil {
		return err
	}
	if log := p.Log(); !strings.Contains(log, "packet forwarding - ports=1 ") {
		return fmt.Errorf("%s started forwarding without its port (\"packet forwarding - ports=0\"): the device was not probed", p.Name)
	}
	return nil
}

// IsSocket reports whether path is a unix socket.
func IsSocket(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// BuildArcnet builds this module's cmd/vhost-arcnet into out; the error
// carries go build's output.
func BuildArcnet(out string) error { return backend.Build(out) }

// CPUs returns the CPUs this process may run on, lowest first.
func CPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	var out []int
	for i := 0; i < 1024 && len(out) < set.Count(); i++ {
		if set.IsSet(i) {
			out = append(out, i)
		}
	}
	return out, nil
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines before ...]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
