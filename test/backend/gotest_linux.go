package backend

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// StartGoTest starts `go test -count=1 -v -run RUN PKG` (PKG relative to
// the module root) with the environment plus env, in a process group of
// its own (so a signal to the group reaches it as a terminal's Ctrl-C
// would, and nothing of it outlives the test: Pdeathsig, and a
// LastResort kill of the group until the test ends). It returns the
// command (its PID is the group's), the lines the test prints on stdout,
// and the go command's own messages (build errors) on stderr.
func StartGoTest(t testing.TB, pkg, run string, env ...string) (*exec.Cmd, <-chan string, *bytes.Buffer) {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(GoTool(), "test", "-count=1", "-v", "-run", run, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(LastResort(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }))
	lines := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return cmd, lines, stderr
}
