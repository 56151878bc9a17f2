//go:build linux

package uplink

import (
	"errors"
	"fmt"
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

// helperEnv makes TestInterruptHelper run (as the child of
// TestInterruptLeavesNothing).
const helperEnv = "ARCNET_INTERRUPT_HELPER"

// helperTag starts the lines TestInterruptHelper prints for its parent.
const helperTag = "ARCNET-INTERRUPT-HELPER"

// TestInterruptLeavesNothing is Ctrl-C during a test that made namespaces:
// it runs `go test -v -run ^TestInterruptHelper$` in a process group of its
// own (as a shell runs a foreground job), and once the helper made its
// namespaces, a vhost-arcnet with a TAP uplink and masquerade, and a sleep,
// it sends SIGINT to that whole group (what Ctrl-C does: the go command,
// the test binary, vhost-arcnet and the sleep all get it), or SIGTERM to
// the test binary alone (vhost-arcnet then hears of it from the test).
// It checks that nothing the helper made is left: no namespace, process,
// socket directory, and that vhost-arcnet removed its TAP and nftables
// table itself (exit 0).
func TestInterruptLeavesNothing(t *testing.T) {
	if os.Getenv(helperEnv) == "1" {
		t.Skip("the helper's own run")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	t.Run("ctrl-c", func(t *testing.T) { interruptHelper(t, syscall.SIGINT, true, false) })
	t.Run("sigterm-test-binary", func(t *testing.T) { interruptHelper(t, syscall.SIGTERM, false, false) })
	// A clean-up that hangs, and Ctrl-C again: the last resort kills the
	// processes by PID and deletes the namespaces and the directory.
	t.Run("ctrl-c-twice", func(t *testing.T) { interruptHelper(t, syscall.SIGINT, true, true) })
}

// interruptHelper runs TestInterruptHelper, sends it sig (to its whole
// process group if group, else to the test binary alone) once it is ready,
// with twice sends it again once the helper's clean-up hangs, and checks
// that nothing it made is left.
func interruptHelper(t *testing.T, sig syscall.Signal, group, twice bool) {
	bin := backend.RequireBinary(t)
	mode := "1"
	if twice {
		mode = "stall"
	}
	cmd, lines, goStderr := backend.StartGoTest(t, "./test/uplink/", "^TestInterruptHelper$", helperEnv+"="+mode, "ARCNET_BIN="+bin)
	pgid := cmd.Process.Pid

	var all []string
	ready := map[string]string{}
	timeout := time.After(3 * time.Minute) // a build of the test binary, then a second
	for ready["ns"] == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("the helper ended before it was ready:\n%s\n%s", strings.Join(all, "\n"), goStderr.String())
			}
			all = append(all, l)
			t.Log("child: " + l)
			if f, ok := helperFields(l, "ready"); ok {
				ready = f
			}
		case <-timeout:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			_ = cmd.Wait()
			t.Fatalf("the helper was not ready within 3m:\n%s", strings.Join(all, "\n"))
		case <-backend.Interrupted():
			_ = syscall.Kill(-pgid, syscall.SIGINT)
			_ = cmd.Wait()
			t.Fatal(backend.InterruptErr())
		}
	}
	for _, want := range []string{"link_" + tapName, "nftables_table_" + masqTable} {
		if !strings.Contains(ready["made"], want) {
			t.Fatalf("the helper did not make %q: made=%s", want, ready["made"])
		}
	}

	target := -pgid
	if !group {
		var err error
		if target, err = strconv.Atoi(ready["pid"]); err != nil {
			t.Fatalf("the helper's pid %q: %v", ready["pid"], err)
		}
	}
	if err := syscall.Kill(target, sig); err != nil {
		t.Fatal(err)
	}
	timeout = time.After(time.Minute)
	for open := true; open; {
		select {
		case l, ok := <-lines:
			if !ok {
				open = false
				break
			}
			all = append(all, l)
			t.Log("child: " + l)
			if _, ok := helperFields(l, "stalling"); ok && twice {
				if err := syscall.Kill(target, sig); err != nil {
					t.Fatal(err)
				}
			}
		case <-timeout:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			_ = cmd.Wait()
			t.Fatalf("the helper did not exit within 1m of %v", sig)
		}
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Errorf("the interrupted go test exited with %v, want a failure", err)
	}
	text := strings.Join(all, "\n")
	name := map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM"}[sig]
	wants := []string{"interrupted (" + name + ")", "--- FAIL: TestInterruptHelper"}
	if twice {
		wants = []string{"interrupted (" + name + ")", name + " again: killing"}
	}
	for _, want := range wants {
		if !strings.Contains(text, want) {
			t.Errorf("the child's output lacks %q", want)
		}
	}
	var done map[string]string
	for _, l := range all {
		if f, ok := helperFields(l, "cleaned"); ok {
			done = f
		}
	}
	if twice {
		if done != nil {
			t.Errorf("the helper's clean-ups ran to the end after the second %s", name)
		}
	} else if done == nil {
		t.Errorf("the helper's clean-up did not run (no %s cleaned line)", helperTag)
	} else {
		if done["left"] != "none" {
			t.Errorf("vhost-arcnet left in its namespace: %s", done["left"])
		}
		if done["backend"] != "exited:0" {
			t.Errorf("vhost-arcnet did not stop cleanly: %s", done["backend"])
		}
	}
	for _, ns := range strings.Split(ready["ns"], ",") {
		if netns.Exists(ns) {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	for _, key := range []string{"backend", "sleep"} {
		pid, err := strconv.Atoi(ready[key])
		if err != nil {
			t.Errorf("%s pid %q: %v", key, ready[key], err)
			continue
		}
		// An orphan may wait a moment for init to reap it.
		for end := time.Now().Add(5 * time.Second); syscall.Kill(pid, 0) == nil && time.Now().Before(end); {
			time.Sleep(10 * time.Millisecond)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still runs: kill 0: %v", key, pid, err)
		}
	}
	if _, err := os.Stat(ready["dir"]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket directory %s left behind: %v", ready["dir"], err)
	}
}

var helperField = regexp.MustCompile(`(\w+)=(\S+)`)

// helperFields parses "ARCNET-INTERRUPT-HELPER WHAT k=v ..." lines.
func helperFields(line, what string) (map[string]string, bool) {
	_, rest, ok := strings.Cut(line+" ", helperTag+" "+what+" ")
	if !ok {
		return nil, false
	}
	f := map[string]string{}
	for _, m := range helperField.FindAllStringSubmatch(rest, -1) {
		f[m[1]] = m[2]
	}
	return f, true
}

// TestInterruptHelper runs only as TestInterruptLeavesNothing's child: it
// makes the two namespaces of an "internet", starts vhost-arcnet with a TAP
// uplink and masquerade in Host and a sleep, says what it made, and waits
// for the interrupt, which fails it so that its clean-ups run.
func TestInterruptHelper(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode != "1" && mode != "stall" {
		t.Skip("runs as the child of TestInterruptLeavesNothing")
	}
	in := newInternet(t)
	var be *arcnet
	// Registered before the backend's clean-up, so it runs after it (once
	// vhost-arcnet is gone) and before the namespaces go.
	t.Cleanup(func() {
		left := "none"
		if l := leftovers(t, in.Host); len(l) > 0 {
			left = strings.ReplaceAll(strings.Join(l, ","), " ", "_")
		}
		state := "none"
		if be != nil {
			state = strings.ReplaceAll(be.State(), " ", "")
		}
		fmt.Println(helperTag + " cleaned backend=" + state + " left=" + left)
	})
	be = startBackend(t, in.Host, "--uplink", "tap", "--masquerade")
	sleep := in.Host.StartBackground(t, "sleep", "600")
	deadline := time.Now().Add(5 * time.Second)
	var made []string
	for time.Now().Before(deadline) {
		made = leftovers(t, in.Host)
		if j := strings.Join(made, ","); strings.Contains(j, "link "+tapName) && strings.Contains(j, "table "+masqTable) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Println(helperTag + " ready pid=" + strconv.Itoa(os.Getpid()) + " ns=" + in.Host.Name + "," + in.Inet.Name +
		" backend=" + strconv.Itoa(be.Pid()) + " sleep=" + strconv.Itoa(sleep.Process.Pid) +
		" dir=" + filepath.Dir(be.sock) + " made=" + strings.ReplaceAll(strings.Join(made, ","), " ", "_"))
	if mode == "stall" {
		// Registered last, so it runs first: a clean-up that hangs.
		t.Cleanup(func() {
			fmt.Println(helperTag + " stalling")
			time.Sleep(time.Minute)
		})
	}
	select {
	case <-backend.Interrupted():
		t.Fatal(backend.InterruptErr())
	case <-time.After(time.Minute):
		t.Fatal("no interrupt within 1m")
	}
}
