package vhostuser_test

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
)

// A listener made by someone else (systemd's socket activation) is served
// like one made by Listen: a frontend connects, negotiates and passes
// traffic, and the session reports the path given. At the end of Serve the
// listener is closed but its socket file stays: it is not the Server's.
func TestListenOn(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "inherited.sock")
	var made *net.UnixListener
	h := startHarness(t, vhostuser.Options{}, path, func(s *vhostuser.Server, p string) error {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		if err != nil {
			return err
		}
		made = l
		return s.ListenOn(l, "")
	})
	f := started(t, h, vhostusertest.Options{}, 1, 64)
	fr := frame(60, 3)
	require.NoError(t, f.Send(fr))
	got, err := f.WaitRecv()
	require.NoError(t, err)
	require.Equal(t, fr, got)
	f.Disconnect()
	e := h.waitEnded()
	require.Equal(t, path, e.info.Path, "the listener's own address names the sessions")

	h.stop()
	_, err = made.Accept()
	require.ErrorIs(t, err, net.ErrClosed, "Serve closed the listener")
	fi, err := os.Lstat(path)
	require.NoError(t, err, "the socket file is not the Server's to remove")
	require.NotZero(t, fi.Mode()&os.ModeSocket)
}

// ListenOn's refusals: a nil listener, a path too long, after Serve.
func TestListenOnErrors(t *testing.T) {
	srv, err := vhostuser.NewServer(vhostuser.Options{NewDevice: func(vhostuser.SessionInfo) (vhostuser.Device, error) { return nil, os.ErrInvalid }})
	require.NoError(t, err)
	require.ErrorContains(t, srv.ListenOn(nil, "x"), "nil listener")
	path := filepath.Join(shortTempDir(t), "a.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	defer l.Close()
	require.ErrorContains(t, srv.ListenOn(l, string(make([]byte, 200))), "socket path of 200 bytes")
	require.NoError(t, srv.ListenOn(l, "custom-name"))
	srv.Close()
	_, err = l.Accept()
	require.ErrorIs(t, err, net.ErrClosed, "Close before Serve closes it")
	_, err = os.Lstat(path)
	require.NoError(t, err, "and leaves the file")
}
