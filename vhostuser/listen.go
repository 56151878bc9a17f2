package vhostuser

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// listener is one listening socket made by Listen.
type listener struct {
	l    *net.UnixListener
	path string
	fi   fs.FileInfo // the socket file we made, to remove only that one
}

// listen makes a listening unix socket at path (ListenUnix) for the server.
func listen(path string, mode fs.FileMode, gid int) (*listener, error) {
	l, fi, err := ListenUnix(path, mode, gid)
	if err != nil {
		return nil, err
	}
	return &listener{l: l, path: path, fi: fi}, nil
}

// ListenUnix makes a listening unix socket at path with permissions mode
// and, if gid is not -1, group gid, and returns it with the socket file's
// FileInfo (to remove only that file later). The vhost-user sockets and
// the control socket of vhost-arcnet are made by it.
//
// A file already at path is replaced only if it is a socket that nobody
// accepts on (connect gets ECONNREFUSED): the leftover of a backend that
// crashed. The new socket is bound under a temporary name in the same
// directory, given its mode and group, and renamed onto path, so no
// client can connect while it still has the umask's permissions or the
// process's group. The listener does not unlink the file on Close.
func ListenUnix(path string, mode fs.FileMode, gid int) (*net.UnixListener, fs.FileInfo, error) {
	var l *net.UnixListener
	fi, err := bindUnix("unix", path, mode, gid, func(at string) (io.Closer, error) {
		var err error
		l, err = net.ListenUnix("unix", &net.UnixAddr{Name: at, Net: "unix"})
		if err == nil {
			l.SetUnlinkOnClose(false)
		}
		return l, err
	})
	if err != nil {
		return nil, nil, err
	}
	return l, fi, nil
}

// ListenUnixgram is ListenUnix for a unix datagram socket (the frame
// sockets of --listen-dgram): the same stale-socket check, permissions and
// rename. The file is not unlinked when the socket closes.
func ListenUnixgram(path string, mode fs.FileMode, gid int) (*net.UnixConn, fs.FileInfo, error) {
	var c *net.UnixConn
	fi, err := bindUnix("unixgram", path, mode, gid, func(at string) (io.Closer, error) {
		var err error
		c, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: at, Net: "unixgram"})
		return c, err
	})
	if err != nil {
		return nil, nil, err
	}
	return c, fi, nil
}

// bindUnix makes a unix socket of network ("unix", "unixgram") at path
// with bind, which binds it at the address it is given; see ListenUnix.
func bindUnix(network, path string, mode fs.FileMode, gid int, bind func(at string) (io.Closer, error)) (fs.FileInfo, error) {
	if len(path) == 0 || len(path) > maxSocketPath {
		return nil, fmt.Errorf("vhostuser: socket path of %d bytes (1..%d)", len(path), maxSocketPath)
	}
	if err := removeStale(network, path); err != nil {
		return nil, err
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(path), ".vhu-"+hex.EncodeToString(rnd[:]))
	bindAt := tmp
	if len(tmp) > maxSocketPath {
		bindAt = path // no room for a temporary name: bind in place
	}
	l, err := bind(bindAt)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: listen on %s: %w", path, err)
	}
	fail := func(err error) (fs.FileInfo, error) {
		_ = l.Close()
		_ = os.Remove(bindAt)
		return nil, fmt.Errorf("vhostuser: listen on %s: %w", path, err)
	}
	if gid != -1 {
		// The group before the mode: a mode such as 0660 never applies
		// to the process's own group.
		if err := os.Lchown(bindAt, -1, gid); err != nil {
			return fail(fmt.Errorf("socket group %d: %w", gid, err))
		}
	}
	if err := os.Chmod(bindAt, mode); err != nil {
		return fail(err)
	}
	if bindAt != path {
		if err := os.Rename(bindAt, path); err != nil {
			return fail(err)
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return fi, nil
}

// LookupGroup returns the gid of group, a group name or a numeric gid
// (Options.SocketGroup).
func LookupGroup(group string) (int, error) {
	if n, err := strconv.ParseUint(group, 10, 31); err == nil {
		return int(n), nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("vhostuser: socket group %q: %w", group, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil || gid < 0 {
		return 0, fmt.Errorf("vhostuser: socket group %q has gid %q, not a number", group, g.Gid)
	}
	return gid, nil
}

// removeStale removes a socket of network at path that nobody accepts on.
func removeStale(network, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("vhostuser: %w", err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("vhostuser: %s exists and is not a socket: remove it or choose another path", path)
	}
	c, err := net.DialTimeout(network, path, time.Second)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("vhostuser: %s is in use by another process (another vhost-arcnet?)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// EAGAIN (a full backlog), EACCES, a timeout: somebody may be
		// there, or we cannot tell. Do not remove it.
		return fmt.Errorf("vhostuser: %s may be in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vhostuser: remove stale socket: %w", err)
	}
	return nil
}

// close stops listening and removes the socket file if it is still ours.
func (l *listener) close() {
	_ = l.l.Close()
	if fi, err := os.Lstat(l.path); err == nil && os.SameFile(fi, l.fi) {
		_ = os.Remove(l.path)
	}
}
