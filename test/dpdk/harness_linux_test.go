//go:build linux

package dpdk

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/test/backend"
)

// Bounds of the harness's waits (not timed assertions: each only stops a
// wait for something that normally takes well under a second or two).
const (
	startTimeout = 40 * time.Second // testpmd EAL init + vhost-user negotiation
)

// testpmdMemMB is testpmd's memory (-m, MiB): with --no-huge it is one memfd
// that the backend maps whole, so it is kept small.
const testpmdMemMB = 128

func TestMain(m *testing.M) {
	code := m.Run()
	backend.Cleanup()
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

// workDir is a per-test directory for sockets, logs and DPDK's runtime
// directory, short enough for a unix socket path (108 bytes). It is removed
// after the test unless ARCNET_DPDK_KEEP=1.
func workDir(t *testing.T) string {
	t.Helper()
	return backend.WorkDir(t, "arcnet-dpdk-", "ARCNET_DPDK_KEEP")
}

// cpus returns the CPUs this process may run on, lowest first.
func cpus(t *testing.T) []int {
	cs, err := CPUs()
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// startProc starts argv with its output in logPath (StartProc). t.Cleanup
// kills it (by PID) if it is still running when the test ends.
func startProc(t *testing.T, name, logPath string, env []string, argv ...string) *Proc {
	t.Helper()
	p, err := StartProc(name, logPath, env, argv...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started %s (pid %d): %s", name, p.Pid(), strings.Join(argv, " "))
	t.Cleanup(p.Kill)
	return p
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
func startTestpmd(t *testing.T, dir string, o testpmdOpts) *Proc {
	t.Helper()
	logLevel := os.Getenv("ARCNET_DPDK_LOG")
	if logLevel == "" {
		logLevel = "pmd.net.virtio.init:debug"
	}
	rt := filepath.Join(dir, "rt")
	if err := os.MkdirAll(rt, 0o700); err != nil {
		t.Fatal(err)
	}
	argv := TestpmdOpts{
		Vdev:       o.vdev,
		Mode:       o.mode,
		CPU:        o.cpu,
		FilePrefix: "arcnet-" + o.name + strconv.Itoa(os.Getpid()),
		Queues:     o.queues,
		TxFirst:    o.txFirst,
		Mem:        []string{"--no-huge", "-m", strconv.Itoa(testpmdMemMB)},
		EAL:        []string{"--log-level=" + logLevel},
	}.Argv()
	return startProc(t, "testpmd-"+o.name, filepath.Join(dir, o.name+".log"),
		[]string{"RUNTIME_DIRECTORY=" + rt}, argv...)
}

// waitForwarding waits until testpmd has started forwarding on one port.
func waitForwarding(p *Proc) error { return WaitForwarding(p, startTimeout) }

// arcnet is a running vhost-arcnet.
type arcnet struct {
	*Proc
	socket string
}

// startArcnet starts vhost-arcnet on dir/arcnet.sock with JSON logs and
// waits for its msg="listening" record.
func startArcnet(t *testing.T, dir string, args ...string) *arcnet {
	t.Helper()
	bin := backend.RequireBinary(t)
	level := os.Getenv("ARCNET_LOG_LEVEL")
	if level == "" {
		level = "info"
	}
	sock := filepath.Join(dir, "arcnet.sock")
	argv := ArcnetArgv(bin, sock, level, args...)
	a := &arcnet{Proc: startProc(t, "vhost-arcnet", filepath.Join(dir, "arcnet.log"), nil, argv...), socket: sock}
	err := a.WaitFor(`msg="listening"`, startTimeout, func(log string) bool { return Listening(log, sock) })
	if err != nil {
		t.Fatalf("%v\nvhost-arcnet log:\n%s", err, a.Log())
	}
	return a
}

// lastPortStats returns the last "port stats" record of port in the log
// (counters only grow: the one written at exit, or at a disconnect if the
// port was gone by then).
func (a *arcnet) lastPortStats(port string) (PortStats, error) {
	recs, _ := ParseJSONLog([]byte(a.Log()))
	ps := PortStatsRecords(recs, port)
	if len(ps) == 0 {
		return PortStats{}, fmt.Errorf("no msg=\"port stats\" record for port %q in the vhost-arcnet log", port)
	}
	last := ps[len(ps)-1]
	if len(last.Missing()) > 0 {
		return last, fmt.Errorf("port stats record of %q lacks %v", port, last.Missing())
	}
	return last, nil
}

// dumpOnFailure logs the (readable) testpmd and vhost-arcnet logs at the end
// of a failed test.
func dumpOnFailure(t *testing.T, procs ...*Proc) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range procs {
			if p == nil {
				continue
			}
			l := p.Log()
			if strings.HasPrefix(p.Name, "testpmd") {
				l = ReadableTestpmdLog(l)
			}
			t.Logf("---- %s log (%s) ----\n%s", p.Name, p.LogPath, Tail(l, 200))
		}
	})
}
