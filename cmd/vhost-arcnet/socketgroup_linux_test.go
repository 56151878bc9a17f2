//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// otherUID is the uid the permission tests connect as (nobody).
const otherUID = 65534

// socketGroupGID is the group the permission tests give the sockets: a
// gid no user of the test host is expected to be in.
const socketGroupGID = 47113

// --socket-group with --socket-mode 0660: vhost-arcnet gives its
// vhost-user socket and its control socket the group; a process of
// another uid connects to the vhost-user socket only as a member of the
// group, and to the control socket (0600) not even then. Root only (a
// chown to another group, a child process of another uid).
func TestSocketGroup(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: chown to another group, a child process of another uid")
	}
	dir := shortDir(t)
	require.NoError(t, os.Chmod(dir, 0o755))
	exe := worldExecutable(t, dir)
	sock, ctl := filepath.Join(dir, "vm.sock"), filepath.Join(dir, "control.sock")
	p := startMain(t, mainCommand(), "--socket", sock, "--socket-mode", "0660", "--socket-group", strconv.Itoa(socketGroupGID),
		"--control", ctl, "--lease-file", "none", "--dns-upstream", "127.0.0.1:9")
	p.waitUp(ctl)
	for path, mode := range map[string]os.FileMode{sock: 0o660, ctl: 0o600} {
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, mode, fi.Mode().Perm(), path)
		require.EqualValues(t, socketGroupGID, fi.Sys().(*syscall.Stat_t).Gid, path)
	}
	member := []uint32{socketGroupGID}
	require.NoError(t, dialAs(t, exe, sock, otherUID, otherUID, member), "a member of the group")
	require.ErrorContains(t, dialAs(t, exe, sock, otherUID, otherUID, nil), "permission denied", "not a member")
	require.ErrorContains(t, dialAs(t, exe, ctl, otherUID, otherUID, member), "permission denied", "the control socket is the owner's")
	require.ErrorContains(t, dialAs(t, exe, sock, otherUID, socketGroupGID+1, []uint32{socketGroupGID + 1}), "permission denied", "another group")
	require.Equal(t, exitOK, p.stop(syscall.SIGTERM))
}

// A --socket-group that names no group is refused with the flag's name.
func TestSocketGroupUnknown(t *testing.T) {
	_, err := parseFlags([]string{"--socket", "a", "--socket-group", "no-such-group-arcnet"}, io.Discard)
	require.ErrorContains(t, err, "--socket-group")
	c, err := parseFlags([]string{"--socket", "a", "--socket-group", "0"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 0, c.socketGID)
	c, err = parseFlags([]string{"--socket", "a"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, -1, c.socketGID, "no --socket-group: the group is left alone")
}

// worldExecutable copies the test binary into dir, where other uids may
// run it (the go command builds it in a directory of mode 0700).
func worldExecutable(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	in, err := os.Open(self)
	require.NoError(t, err)
	defer in.Close()
	exe := filepath.Join(dir, "dialer.test")
	out, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
	return exe
}

// dialAs connects to the unix socket path from a child process (exe, a
// copy of this test binary running TestDialHelper) with uid, gid and
// supplementary groups; nil if it connected, else what it got.
func dialAs(t *testing.T, exe, path string, uid, gid uint32, groups []uint32) error {
	t.Helper()
	cmd := exec.Command(exe, "-test.run", "^TestDialHelper$", "-test.count", "1")
	cmd.Dir = filepath.Dir(exe)
	cmd.Env = append(mainCommand().Env, "ARCNET_DIAL="+path)
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

// TestDialHelper is the child of dialAs: it connects to $ARCNET_DIAL and
// exits 0, or prints the error and exits 3.
func TestDialHelper(t *testing.T) {
	path := os.Getenv("ARCNET_DIAL")
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
