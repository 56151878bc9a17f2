//go:build linux

package dpdk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds of the harness's waits (not timed assertions: each only stops a
// wait for something that normally takes well under a second or two).
const (
	startTimeout = 40 * time.Second // testpmd EAL init + vhost-user negotiation
	stopTimeout  = 20 * time.Second // SIGINT to exit
	pollEvery    = 50 * time.Millisecond
)

// testpmdMemMB is testpmd's memory (-m, MiB): with --no-huge it is one memfd
// that the backend maps whole, so it is kept small.
const testpmdMemMB = 128

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// requireDPDK skips the test unless dpdk-testpmd can run here.
func requireDPDK(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped in -short mode: starts dpdk-testpmd")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: dpdk-testpmd's vhost-user and virtio_user devices (run the e2e tests as root)")
	}
	if _, err := exec.LookPath("dpdk-testpmd"); err != nil {
		t.Skip("dpdk-testpmd not found: install Debian 12's dpdk-dev package (make setup)")
	}
	if _, err := exec.LookPath("stdbuf"); err != nil {
		t.Skip("stdbuf (coreutils) not found: needed to read testpmd's output as it runs")
	}
}

// arcnetBinary returns the vhost-arcnet binary: ARCNET_BIN, or one built
// from this module's cmd/vhost-arcnet once per test binary.
func arcnetBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ARCNET_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		buildDir, err = os.MkdirTemp("", "arcnet-dpdk-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(buildDir, "vhost-arcnet")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/vhost-arcnet")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/vhost-arcnet in %s: %w\n%s", root, err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("cannot build vhost-arcnet: %v", buildErr)
	}
	return binPath
}

// moduleRoot finds the directory of go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// workDir is a per-test directory for sockets, logs and DPDK's runtime
// directory, short enough for a unix socket path (108 bytes). It is removed
// after the test unless ARCNET_DPDK_KEEP=1.
func workDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "arcnet-dpdk-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("ARCNET_DPDK_KEEP") == "1" {
			t.Logf("kept logs in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// cpus returns the CPUs this process may run on, lowest first.
func cpus(t *testing.T) []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatalf("sched_getaffinity: %v", err)
	}
	var out []int
	for i := 0; i < 1024 && len(out) < set.Count(); i++ {
		if set.IsSet(i) {
			out = append(out, i)
		}
	}
	return out
}

// proc is a process the harness started, with its stdout and stderr in one
// log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error // valid after done is closed
}

// startProc starts argv with its output in logPath. t.Cleanup kills it (by
// PID) if it is still running when the test ends.
func startProc(t *testing.T, name, logPath string, env []string, argv ...string) *proc {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// Its own process group: a ^C on the terminal running `go test` reaches
	// only the test binary, whose cleanup then stops the child in order.
	// Pdeathsig: if the test binary dies (a go test timeout), so does the child.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Logf("started %s (pid %d): %s", name, cmd.Process.Pid, strings.Join(argv, " "))
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// waitFor polls the log until cond holds; it fails when the process exits
// first or after timeout.
func (p *proc) waitFor(what string, timeout time.Duration, cond func(log string) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if cond(p.log()) {
			return nil
		}
		if p.exited() {
			if cond(p.log()) {
				return nil
			}
			return fmt.Errorf("%s exited (%v) before %s", p.name, p.waitErr, what)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %s within %v", p.name, what, timeout)
		}
		time.Sleep(pollEvery)
	}
}

// stop sends sig and waits for the exit; after stopTimeout it kills the
// process and returns an error. It returns the process's exit error.
func (p *proc) stop(sig syscall.Signal) (exitErr error, err error) {
	if p.exited() {
		return p.waitErr, fmt.Errorf("%s had already exited (%v)", p.name, p.waitErr)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return nil, fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return p.waitErr, nil
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return p.waitErr, fmt.Errorf("%s did not exit within %v of %v; killed", p.name, stopTimeout, sig)
	}
}

// testpmdOpts describe one dpdk-testpmd run.
type testpmdOpts struct {
	name    string // "fe" / "be": log file and --file-prefix
	vdev    string // e.g. net_virtio_user0,path=SOCK,queues=2
	mode    string // --forward-mode: txonly | rxonly | io
	queues  int    // --rxq/--txq (default 1)
	txFirst bool   // --tx-first: send one burst per stream before forwarding (io mode)
	cpu     int    // main and forwarding lcore are both pinned here
}

// startTestpmd starts dpdk-testpmd without a terminal (--stats-period=1),
// without hugepages or PCI, with a private --file-prefix and its runtime
// directory under dir.
func startTestpmd(t *testing.T, dir string, o testpmdOpts) *proc {
	t.Helper()
	logLevel := os.Getenv("ARCNET_DPDK_LOG")
	if logLevel == "" {
		logLevel = "pmd.net.virtio.init:debug"
	}
	rt := filepath.Join(dir, "rt")
	if err := os.MkdirAll(rt, 0o700); err != nil {
		t.Fatal(err)
	}
	argv := []string{
		// stdbuf: testpmd's stdout is a file, line-buffer it so that the log
		// can be followed while it runs (stdbuf execs testpmd: same PID).
		"stdbuf", "-oL", "dpdk-testpmd",
		"--lcores", fmt.Sprintf("0@%d,1@%d", o.cpu, o.cpu),
		"--file-prefix=arcnet-" + o.name + strconv.Itoa(os.Getpid()),
		"--no-pci", "--no-huge", "-m", strconv.Itoa(testpmdMemMB), "--no-telemetry",
		"--log-level=" + logLevel,
		"--vdev", o.vdev,
		"--",
		"--stats-period=1", "--total-num-mbufs=8192", "--forward-mode=" + o.mode,
	}
	if o.queues > 1 {
		argv = append(argv, "--rxq="+strconv.Itoa(o.queues), "--txq="+strconv.Itoa(o.queues))
	}
	if o.txFirst {
		argv = append(argv, "--tx-first")
	}
	return startProc(t, "testpmd-"+o.name, filepath.Join(dir, o.name+".log"),
		[]string{"RUNTIME_DIRECTORY=" + rt}, argv...)
}

// waitForwarding waits until testpmd has started forwarding on one port.
func waitForwarding(p *proc) error {
	err := p.waitFor("\"packet forwarding - ports=1\"", startTimeout, func(log string) bool {
		return strings.Contains(log, "packet forwarding - ports=")
	})
	if err != nil {
		return err
	}
	if log := p.log(); !strings.Contains(log, "packet forwarding - ports=1 ") {
		return fmt.Errorf("%s started forwarding without its port (\"packet forwarding - ports=0\"): the device was not probed", p.name)
	}
	return nil
}

// arcnet is a running vhost-arcnet.
type arcnet struct {
	*proc
	socket string
}

// startArcnet starts vhost-arcnet on dir/arcnet.sock with JSON logs and
// waits for its msg="listening" record.
func startArcnet(t *testing.T, dir string, args ...string) *arcnet {
	t.Helper()
	bin := arcnetBinary(t)
	level := os.Getenv("ARCNET_LOG_LEVEL")
	if level == "" {
		level = "info"
	}
	sock := filepath.Join(dir, "arcnet.sock")
	argv := append([]string{bin, "--socket", sock, "--log-format", "json", "--log-level", level}, args...)
	a := &arcnet{proc: startProc(t, "vhost-arcnet", filepath.Join(dir, "arcnet.log"), nil, argv...), socket: sock}
	err := a.waitFor(`msg="listening"`, startTimeout, func(string) bool {
		recs, _ := parseJSONLog([]byte(a.log()))
		for _, r := range recs {
			if r.Str("msg") == "listening" && r.Str("path") == sock {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("%v\nvhost-arcnet log:\n%s", err, a.log())
	}
	return a
}

// lastPortStats returns the last "port stats" record of port in the log
// (counters only grow: the one written at exit, or at a disconnect if the
// port was gone by then).
func (a *arcnet) lastPortStats(port string) (portStats, error) {
	recs, _ := parseJSONLog([]byte(a.log()))
	ps := portStatsRecords(recs, port)
	if len(ps) == 0 {
		return portStats{}, fmt.Errorf("no msg=\"port stats\" record for port %q in the vhost-arcnet log", port)
	}
	last := ps[len(ps)-1]
	if len(last.missingCounterFields) > 0 {
		return last, fmt.Errorf("port stats record of %q lacks %v", port, last.missingCounterFields)
	}
	return last, nil
}

// dumpOnFailure logs the (readable) testpmd and vhost-arcnet logs at the end
// of a failed test.
func dumpOnFailure(t *testing.T, procs ...*proc) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range procs {
			if p == nil {
				continue
			}
			l := p.log()
			if strings.HasPrefix(p.name, "testpmd") {
				l = readableTestpmdLog(l)
			}
			t.Logf("---- %s log (%s) ----\n%s", p.name, p.logPath, tail(l, 200))
		}
	})
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines before ...]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
