//go:build linux

package qemu

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/test/backend"
	"github.com/arcnet/vhost-arcnet/test/netns"
)

// The demo's lines that name what it made (see TestDemo).
var (
	demoNSRe      = regexp.MustCompile(`^\s+((?:host|inet)-[0-9a-f]{6})\s`)
	demoBackendRe = regexp.MustCompile(`started \(pid (\d+)\) inside `)
	demoQEMURe    = regexp.MustCompile(`guest demo: started \S+ \(pid (\d+)\)`)
	demoSocketRe  = regexp.MustCompile(`^\s+vhost-user socket (\S+)$`)
)

// TestDemoInterrupted is Ctrl-C during `make demo`: it runs
// `go test -v -run ^TestDemo$ ./test/qemu/` in a process group of its own
// (as a shell runs a foreground job), sends SIGINT to the whole group once
// QEMU boots (the go command, the test binary, vhost-arcnet and QEMU all get
// it, as from a terminal), and checks that nothing the demo made is left:
// its namespaces, vhost-arcnet (which exits 0: it removed its TAP and its
// nftables table), QEMU and its directory. It runs with ARCNET_DEMO=1, as
// root, like the demo.
func TestDemoInterrupted(t *testing.T) {
	if os.Getenv("ARCNET_DEMO") != "1" {
		t.Skip("runs with ARCNET_DEMO=1 (make demo)")
	}
	demoPreflight(t)
	bin := backend.RequireBinary(t)
	cmd, lines, goStderr := backend.StartGoTest(t, "./test/qemu/", "^TestDemo$", "ARCNET_DEMO=1", "ARCNET_BIN="+bin)
	pgid := cmd.Process.Pid

	var all, namespaces []string
	var backendPid, qemuPid int
	var dir string
	take := func(l string) {
		all = append(all, l)
		t.Log("demo: " + l)
		if m := demoNSRe.FindStringSubmatch(l); m != nil {
			namespaces = append(namespaces, m[1])
		}
		if m := demoBackendRe.FindStringSubmatch(l); m != nil {
			backendPid, _ = strconv.Atoi(m[1])
		}
		if m := demoQEMURe.FindStringSubmatch(l); m != nil {
			qemuPid, _ = strconv.Atoi(m[1])
		}
		if m := demoSocketRe.FindStringSubmatch(l); m != nil {
			dir = filepath.Dir(m[1])
		}
	}
	// The guest image may be built first (minutes, once per machine).
	timeout := time.After(10 * time.Minute)
	for qemuPid == 0 {
		select {
		case l, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("the demo ended before QEMU started:\n%s\n%s", strings.Join(all, "\n"), goStderr.String())
			}
			take(l)
		case <-timeout:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			_ = cmd.Wait()
			t.Fatal("QEMU did not start within 10m")
		case <-backend.Interrupted():
			_ = syscall.Kill(-pgid, syscall.SIGINT)
			_ = cmd.Wait()
			t.Fatal(backend.InterruptErr())
		}
	}
	if len(namespaces) != 2 || backendPid == 0 || dir == "" {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		_ = cmd.Wait()
		t.Fatalf("the demo's output did not name its namespaces (%v), vhost-arcnet's pid (%d) and socket (%q)",
			namespaces, backendPid, dir)
	}

	// Ctrl-C.
	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	timeout = time.After(time.Minute)
	for open := true; open; {
		select {
		case l, ok := <-lines:
			if ok {
				take(l)
			} else {
				open = false
			}
		case <-timeout:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			_ = cmd.Wait()
			t.Fatal("the demo did not exit within 1m of SIGINT")
		}
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Errorf("the interrupted demo exited with %v, want a failure", err)
	}
	text := strings.Join(all, "\n")
	for _, want := range []string{"--- FAIL: TestDemo", "=== SIGINT: the interrupted tests cleaned up", "(exited: 0): log"} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	for _, ns := range namespaces {
		if netns.Exists(ns) {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	for name, pid := range map[string]int{"vhost-arcnet": backendPid, "QEMU": qemuPid} {
		for end := time.Now().Add(5 * time.Second); syscall.Kill(pid, 0) == nil && time.Now().Before(end); {
			time.Sleep(10 * time.Millisecond)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still runs: kill 0: %v", name, pid, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the demo's directory %s is left: %v", dir, err)
	}
}
