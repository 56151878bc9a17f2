package vhostuser_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
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
		{"0660 member", 0o660, strconv.Itoa(vhostusertest.SocketGroupGID), []uint32{vhostusertest.SocketGroupGID}, true},
		{"0660 not a member", 0o660, strconv.Itoa(vhostusertest.SocketGroupGID), nil, false},
		{"0660 no group given", 0o660, "", []uint32{vhostusertest.SocketGroupGID}, false},
		{"0600 member", 0o600, strconv.Itoa(vhostusertest.SocketGroupGID), []uint32{vhostusertest.SocketGroupGID}, false},
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
				require.EqualValues(t, vhostusertest.SocketGroupGID, fi.Sys().(*syscall.Stat_t).Gid)
			}
			err = dialAs(t, exe, path, vhostusertest.OtherUID, vhostusertest.OtherUID, tc.groups)
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

// worldExecutable and dialAs: vhostusertest's, with this package's child
// test and environment.
func worldExecutable(t *testing.T, dir string) string { return vhostusertest.WorldExecutable(t, dir) }

func dialAs(t *testing.T, exe, path string, uid, gid uint32, groups []uint32) error {
	return vhostusertest.DialAs(t, exe, "TestDialHelper", path, os.Environ(), uid, gid, groups)
}

// TestDialHelper is the child of dialAs: it connects to $ARCNET_DIAL and
// exits 0, or prints the error and exits 3.
func TestDialHelper(t *testing.T) { vhostusertest.DialHelper(t) }
