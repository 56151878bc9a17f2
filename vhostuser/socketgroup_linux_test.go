package vhostuser_test

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

	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// Options.SocketGroup as an unprivileged user: the process's own group is
// one it may give, and the socket gets it; a group that does not exist is
// refused by NewServer.
func TestListenSocketGroupOwn(t *testing.T) {
	dir := shortTempDir(t)
	gid := os.Getgid()
	srv, err := vhostuser.NewServer(vhostuser.Options{
		SocketMode:  0o660,
		SocketGroup: strconv.Itoa(gid),
		Logger:      testLogger(t),
		NewDevice:   func(info vhostuser.SessionInfo) (vhostuser.Device, error) { return newEchoDevice(info), nil },
	})
	require.NoError(t, err)
	defer srv.Close()
	path := filepath.Join(dir, "own.sock")
	require.NoError(t, srv.Listen(path))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o660), fi.Mode().Perm())
	require.EqualValues(t, gid, fi.Sys().(*syscall.Stat_t).Gid)

	_, err = vhostuser.NewServer(vhostuser.Options{
		SocketGroup: "no-such-group-arcnet",
		NewDevice:   func(info vhostuser.SessionInfo) (vhostuser.Device, error) { return newEchoDevice(info), nil },
	})
	require.ErrorContains(t, err, "no-such-group-arcnet")
	g, err := vhostuser.LookupGroup("0")
	require.NoError(t, err)
	require.Equal(t, 0, g)
}

// otherUID is the uid the permission tests connect as (nobody).
const otherUID = 65534

// socketGroupGID is the group the permission tests give the sockets: a
// gid no user of the test host is expected to be in.
const socketGroupGID = 47113

// TestListenSocketGroupOtherUser: a second uid connects to a socket made
// by Listen only when its mode and group let it: mode 0660 and group G let
// a process of another uid in G connect, and nobody else; mode 0600 keeps
// out even G's members. The connecting process is a child of the test
// binary run with syscall.Credential (root only).
func TestListenSocketGroupOtherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: chown to another group, a child process of another uid")
	}
	dir := worldDir(t)
	exe := worldExecutable(t, dir)
	if err := exec.Command(exe, "-test.run", "^$").Run(); errors.Is(err, syscall.ENOEXEC) {
		// make arm64 runs the tests under qemu-aarch64-static: the copied
		// binary cannot be executed directly as another user there.
		t.Skip("the test binary cannot be executed directly here (another architecture under qemu-user)")
	}
	for _, tc := range []struct {
		name   string
		mode   os.FileMode
		group  string
		groups []uint32 // the child's supplementary groups
		ok     bool
	}{
		{"0660 member", 0o660, strconv.Itoa(socketGroupGID), []uint32{socketGroupGID}, true},
		{"0660 not a member", 0o660, strconv.Itoa(socketGroupGID), nil, false},
		{"0660 no group given", 0o660, "", []uint32{socketGroupGID}, false},
		{"0600 member", 0o600, strconv.Itoa(socketGroupGID), []uint32{socketGroupGID}, false},
		{"0666 anyone", 0o666, "", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := vhostuser.NewServer(vhostuser.Options{
				SocketMode:  tc.mode,
				SocketGroup: tc.group,
				Logger:      testLogger(t),
				NewDevice:   func(info vhostuser.SessionInfo) (vhostuser.Device, error) { return newEchoDevice(info), nil },
			})
			require.NoError(t, err)
			defer srv.Close()
			path := filepath.Join(dir, "g.sock")
			require.NoError(t, srv.Listen(path))
			fi, err := os.Stat(path)
			require.NoError(t, err)
			require.Equal(t, tc.mode, fi.Mode().Perm())
			if tc.group != "" {
				require.EqualValues(t, socketGroupGID, fi.Sys().(*syscall.Stat_t).Gid)
			}
			err = dialAs(t, exe, path, otherUID, otherUID, tc.groups)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, "permission denied")
			}
		})
	}
}

// worldDir is a temporary directory that other uids may enter (the
// sockets of the permission tests are in it).
func worldDir(t *testing.T) string {
	t.Helper()
	dir := shortTempDir(t)
	require.NoError(t, os.Chmod(dir, 0o755))
	return dir
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
	cmd.Env = append(os.Environ(), "ARCNET_DIAL="+path)
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
