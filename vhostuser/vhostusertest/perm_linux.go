package vhostusertest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Helpers of the socket permission tests (vhostuser and cmd/vhost-arcnet):
// connect to a unix socket as another uid, from a copy of the test binary.

// OtherUID is the uid the permission tests connect as (nobody).
const OtherUID = 65534

// SocketGroupGID is the group the permission tests give the sockets: a
// gid no user of the test host is expected to be in.
const SocketGroupGID = 47113

// dialEnv is the variable that makes a copy of a test binary the dialer.
const dialEnv = "ARCNET_DIAL"

// WorldExecutable copies the running test binary into dir, where other
// uids may run it (the go command builds it in a directory of mode 0700).
func WorldExecutable(t testing.TB, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	exe := filepath.Join(dir, "dialer.test")
	out, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return exe
}

// DialAs connects to the unix socket path from a child process (exe, a
// copy of the test binary, running the test named helper, which calls
// DialHelper) with environment env, uid, gid and supplementary groups; nil
// if it connected, else what it got.
func DialAs(t testing.TB, exe, helper, path string, env []string, uid, gid uint32, groups []uint32) error {
	t.Helper()
	cmd := exec.Command(exe, "-test.run", "^"+helper+"$", "-test.count", "1")
	cmd.Dir = filepath.Dir(exe)
	cmd.Env = append(env, dialEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee) && ee.ExitCode() == 3:
		return fmt.Errorf("uid %d: %s", uid, out)
	}
	t.Fatalf("dial helper as uid %d: %v: %s", uid, err, out)
	return nil
}

// DialHelper is the body of the child's test: it connects to the socket
// DialAs named and exits 0, or prints the error and exits 3. Outside such
// a child it skips the test.
func DialHelper(t testing.TB) {
	path := os.Getenv(dialEnv)
	if path == "" {
		t.Skip("the child process of the socket permission tests")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	_ = c.Close()
	os.Exit(0)
}
