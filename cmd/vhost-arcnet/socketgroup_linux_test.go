//go:build linux

package main

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/stretchr/testify/require"
)

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
	p := startMain(t, mainCommand(), "--socket", sock, "--socket-mode", "0660", "--socket-group", strconv.Itoa(vhostusertest.SocketGroupGID),
		"--control", ctl, "--lease-file", "none", "--dns-upstream", "127.0.0.1:9")
	p.waitUp(ctl)
	for path, mode := range map[string]os.FileMode{sock: 0o660, ctl: 0o600} {
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, mode, fi.Mode().Perm(), path)
		require.EqualValues(t, vhostusertest.SocketGroupGID, fi.Sys().(*syscall.Stat_t).Gid, path)
	}
	member := []uint32{vhostusertest.SocketGroupGID}
	require.NoError(t, dialAs(t, exe, sock, vhostusertest.OtherUID, vhostusertest.OtherUID, member), "a member of the group")
	require.ErrorContains(t, dialAs(t, exe, sock, vhostusertest.OtherUID, vhostusertest.OtherUID, nil), "permission denied", "not a member")
	require.ErrorContains(t, dialAs(t, exe, ctl, vhostusertest.OtherUID, vhostusertest.OtherUID, member), "permission denied", "the control socket is the owner's")
	require.ErrorContains(t, dialAs(t, exe, sock, vhostusertest.OtherUID, vhostusertest.SocketGroupGID+1, []uint32{vhostusertest.SocketGroupGID + 1}), "permission denied", "another group")
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

// worldExecutable and dialAs: vhostusertest's, with this package's child
// test and environment.
func worldExecutable(t *testing.T, dir string) string { return vhostusertest.WorldExecutable(t, dir) }

func dialAs(t *testing.T, exe, path string, uid, gid uint32, groups []uint32) error {
	return vhostusertest.DialAs(t, exe, "TestDialHelper", path, mainCommand().Env, uid, gid, groups)
}

// TestDialHelper is the child of dialAs: it connects to $ARCNET_DIAL and
// exits 0, or prints the error and exits 3.
func TestDialHelper(t *testing.T) { vhostusertest.DialHelper(t) }
