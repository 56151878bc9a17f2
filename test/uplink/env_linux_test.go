//go:build linux

package uplink

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/test/netns"
)

// The TAP uplink's defaults (hostif.DefaultLinkNet) and the guest network's.
var (
	linkNet   = netip.MustParsePrefix("198.19.255.252/30")
	hostEnd   = netip.MustParseAddr("198.19.255.253")
	gatewayIP = netip.MustParseAddr("192.168.127.1")
	guestNet  = netip.MustParsePrefix("192.168.127.0/24")
)

// masqTable is the nftables table of --masquerade.
const masqTable = "vhost_arcnet"

var bin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	os.Exit(code)
}

// backendBinary returns $ARCNET_BIN or builds ./cmd/vhost-arcnet once.
func backendBinary(t testing.TB) string {
	t.Helper()
	bin.once.Do(func() {
		if p := os.Getenv("ARCNET_BIN"); p != "" {
			bin.path = p
			return
		}
		root, err := filepath.Abs("../..")
		if err != nil {
			bin.err = err
			return
		}
		if bin.dir, bin.err = os.MkdirTemp("", "uplink-bin-"); bin.err != nil {
			return
		}
		p := filepath.Join(bin.dir, "vhost-arcnet")
		goBin := "go"
		if r := os.Getenv("GOROOT"); r != "" {
			if _, err := os.Stat(filepath.Join(r, "bin", "go")); err == nil {
				goBin = filepath.Join(r, "bin", "go")
			}
		}
		cmd := exec.Command(goBin, "build", "-buildvcs=false", "-o", p, "./cmd/vhost-arcnet")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			bin.err = fmt.Errorf("go build ./cmd/vhost-arcnet: %w\n%s", err, out)
			return
		}
		bin.path = p
	})
	if bin.err != nil {
		t.Fatalf("vhost-arcnet binary: %v", bin.err)
	}
	return bin.path
}

// record is one JSON log record of vhost-arcnet.
type record map[string]any

func (r record) msg() string { s, _ := r["msg"].(string); return s }

func (r record) str(k string) string { s, _ := r[k].(string); return s }

// num returns the integer value of key k (0 if absent).
func (r record) num(k string) uint64 {
	n, ok := r[k].(json.Number)
	if !ok {
		return 0
	}
	v, _ := strconv.ParseUint(n.String(), 10, 64)
	return v
}

// backend is a vhost-arcnet process running in a namespace.
type backend struct {
	t    testing.TB
	ns   *netns.NS
	sock string
	cmd  *exec.Cmd

	mu      sync.Mutex
	changed chan struct{}
	records []record
	lines   []string
	exited  bool
	exitErr error
	done    chan struct{}
}

// startBackend runs vhost-arcnet --socket DIR/vm.sock --log-format json
// --dns-upstream 127.0.0.1:9 ARGS in ns and waits until it listens. It is
// stopped (SIGTERM, then SIGKILL by its PID) when the test ends if
// stop was not called.
func startBackend(t testing.TB, ns *netns.NS, args ...string) *backend {
	t.Helper()
	path := backendBinary(t)
	sock := filepath.Join(t.TempDir(), "vm.sock")
	argv := append([]string{"--socket", sock, "--log-format", "json", "--dns-upstream", "127.0.0.1:9"}, args...)
	b := &backend{t: t, ns: ns, sock: sock, changed: make(chan struct{}), done: make(chan struct{})}
	b.cmd = ns.Command(path, argv...)
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start vhost-arcnet: %v", err)
	}
	go func() {
		b.read(stderr)
		err := b.cmd.Wait()
		b.mu.Lock()
		b.exited, b.exitErr = true, err
		b.broadcast()
		b.mu.Unlock()
		close(b.done)
	}()
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			b.mu.Lock()
			lines := b.lines[max(0, len(b.lines)-30):]
			b.mu.Unlock()
			t.Logf("vhost-arcnet log (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
		}
	})
	if _, _, err := b.wait(func(r record) bool { return r.msg() == "listening" }, 0, 15*time.Second); err != nil {
		t.Fatalf("vhost-arcnet did not start: %v", err)
	}
	return b
}

func (b *backend) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var rec record
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		if dec.Decode(&rec) != nil {
			rec = nil
		}
		b.mu.Lock()
		b.lines = append(b.lines, line)
		if rec != nil {
			b.records = append(b.records, rec)
		}
		b.broadcast()
		b.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

func (b *backend) broadcast() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// pid is the vhost-arcnet process's PID (ip netns exec execs it).
func (b *backend) pid() int { return b.cmd.Process.Pid }

// wait returns the first record at index from or later that match
// accepts, and its index.
func (b *backend) wait(match func(record) bool, from int, timeout time.Duration) (record, int, error) {
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
			return nil, 0, fmt.Errorf("vhost-arcnet exited: %v", b.exitErr)
		}
		select {
		case <-changed:
		case <-deadline.C:
			return nil, 0, fmt.Errorf("vhost-arcnet: no such log record within %v", timeout)
		}
	}
}

// gatewayMAC reads the gateway's MAC from the "guest network" record.
func (b *backend) gatewayMAC() header.MAC {
	b.t.Helper()
	r, _, err := b.wait(func(r record) bool { return r.msg() == "guest network" }, 0, 5*time.Second)
	if err != nil {
		b.t.Fatal(err)
	}
	var m header.MAC
	if _, err := fmt.Sscanf(r.str("gateway_mac"), "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]); err != nil {
		b.t.Fatalf("gateway_mac %q: %v", r.str("gateway_mac"), err)
	}
	return m
}

// stats is one SIGUSR1 answer: the "port stats" records by port and the
// "gateway stats" record.
type stats struct {
	ports   map[string]record
	gateway record
}

// stats asks for the counters (SIGUSR1).
func (b *backend) stats() stats {
	b.t.Helper()
	b.mu.Lock()
	from := len(b.records)
	b.mu.Unlock()
	if err := b.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		b.t.Fatalf("SIGUSR1: %v", err)
	}
	gw, end, err := b.wait(func(r record) bool { return r.msg() == "gateway stats" }, from, 5*time.Second)
	if err != nil {
		b.t.Fatalf("stats: %v", err)
	}
	s := stats{ports: map[string]record{}, gateway: gw}
	b.mu.Lock()
	for _, r := range b.records[from:end] {
		if r.msg() == "port stats" {
			s.ports[r.str("port")] = r
		}
	}
	b.mu.Unlock()
	return s
}

// stop sends SIGTERM and waits up to 10 s for the exit, then kills; it
// returns the exit error.
func (b *backend) stop() error {
	b.mu.Lock()
	exited := b.exited
	b.mu.Unlock()
	if !exited {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.done:
		case <-time.After(10 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.done
			return fmt.Errorf("vhost-arcnet did not exit 10 s after SIGTERM: killed")
		}
	}
	<-b.done
	return b.exitErr
}

// cpuTicks returns the process's user+system time in clock ticks
// (/proc/PID/stat utime+stime).
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	// Fields after the command: state is f[0], utime field 14 is f[11].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return u + st, nil
}

// clockTick is USER_HZ: /proc times are in 1/100 s on Linux.
const clockTick = 10 * time.Millisecond

// newInternet makes a netns.Internet and registers, before its own
// cleanups (so it runs after them), a check that its namespaces are gone.
func newInternet(t testing.TB) *netns.Internet {
	t.Helper()
	var names []string
	t.Cleanup(func() {
		for _, n := range names {
			if netns.Exists(n) {
				t.Errorf("namespace %s left behind", n)
			}
		}
	})
	in := netns.NewInternet(t)
	names = []string{in.Host.Name, in.Inet.Name}
	return in
}

// leftovers lists what vhost-arcnet's uplink may leave in ns: TAP links
// (arcnet*), routes to the link network, and the masquerade table.
func leftovers(t testing.TB, ns *netns.NS) []string {
	t.Helper()
	var out []string
	nl, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatalf("netlink in %s: %v", ns.Name, err)
	}
	defer nl.Close()
	links, err := nl.LinkList()
	if err != nil {
		t.Fatalf("link list: %v", err)
	}
	for _, l := range links {
		if a := l.Attrs(); strings.HasPrefix(a.Name, "arcnet") || l.Type() == "tuntap" {
			out = append(out, "link "+a.Name)
		}
	}
	routes, err := nl.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("route list: %v", err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if p, ok := netip.AddrFromSlice(r.Dst.IP); ok && linkNet.Overlaps(netip.PrefixFrom(p.Unmap(), 32)) {
				out = append(out, "route "+r.Dst.String())
			}
		}
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle())))
	if err != nil {
		t.Fatalf("nftables: %v", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatalf("nftables list tables: %v", err)
	}
	for _, tb := range tables {
		if tb.Name == masqTable {
			out = append(out, "nftables table "+tb.Name)
		}
	}
	return out
}

// stopClean stops the backend (exit status 0 expected) and checks that it
// left nothing in its namespace.
func stopClean(t testing.TB, b *backend) {
	t.Helper()
	if err := b.stop(); err != nil {
		t.Errorf("vhost-arcnet exit after SIGTERM: %v", err)
	}
	if l := leftovers(t, b.ns); len(l) > 0 {
		t.Errorf("vhost-arcnet left behind in %s: %v", b.ns.Name, l)
	}
}
