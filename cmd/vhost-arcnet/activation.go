package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// systemd socket activation (sd_listen_fds(3)): a socket unit listens on
// the vhost-user and control sockets and starts vhost-arcnet with them as
// fds 3, 4, ... (LISTEN_FDS of them), LISTEN_PID set to its pid and
// LISTEN_FDNAMES to their names (FileDescriptorName=, ':'-separated).
// Environment variables meant for another process (LISTEN_PID not ours)
// are ignored, as sd_listen_fds does; they are removed from the
// environment either way (unset_environment), and the fds are made
// close-on-exec.
//
// Each inherited socket must be a listening unix stream socket, and is
// matched to a --socket or --control path by its bound address (the
// ListenStream= path), else by its name: the path itself, its base name, or
// "control" for the control socket. An inherited socket that matches none
// of them is an error: the units and the command line disagree. A path
// without an inherited socket is made as usual.

// listenFDsStart is SD_LISTEN_FDS_START: the first inherited fd.
const listenFDsStart = 3

// inheritedSocket is one socket passed by the service manager.
type inheritedSocket struct {
	fd   int
	name string // from LISTEN_FDNAMES, "" if none
	addr string // the path it is bound to, "" for an unnamed socket
	ln   *net.UnixListener
	used bool
}

// activation is the sockets passed to this process.
type activation struct {
	socks []*inheritedSocket
}

// socketActivation reads LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES and
// takes the fds they describe; no activation (nothing set, or set for
// another process) is an empty activation.
func socketActivation() (*activation, error) {
	fds, pid, names := os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDNAMES")
	a := &activation{}
	if fds == "" || pid == "" {
		return a, nil
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return a, nil // for another process (sd_listen_fds returns 0)
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > 1024 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q: want a number of fds", fds)
	}
	var nameList []string
	if names != "" {
		nameList = strings.Split(names, ":")
	}
	for i := range n {
		fd := listenFDsStart + i
		syscall.CloseOnExec(fd)
		s := &inheritedSocket{fd: fd}
		if i < len(nameList) {
			s.name = nameList[i]
		}
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		ln, err := net.FileListener(f)
		f.Close() // FileListener took a duplicate
		if err != nil {
			a.close()
			return nil, fmt.Errorf("socket activation: fd %d (%s): %v: want a listening unix stream socket (ListenStream=/path in the socket unit)", fd, s.describe(), err)
		}
		ul, ok := ln.(*net.UnixListener)
		if !ok {
			ln.Close()
			a.close()
			return nil, fmt.Errorf("socket activation: fd %d (%s) listens on %s %s: want a unix socket (ListenStream=/path in the socket unit)", fd, s.describe(), ln.Addr().Network(), ln.Addr())
		}
		ul.SetUnlinkOnClose(false)
		s.ln = ul
		if ua, ok := ul.Addr().(*net.UnixAddr); ok {
			s.addr = ua.Name
		}
		a.socks = append(a.socks, s)
	}
	return a, nil
}

func (s *inheritedSocket) describe() string {
	name := s.name
	if name == "" {
		name = "no name"
	}
	if s.addr != "" {
		return "name " + name + ", " + s.addr
	}
	return "name " + name
}

// take returns the inherited listener for path, nil if there is none.
// names are further names it may be passed under (FileDescriptorName=).
func (a *activation) take(path string, names ...string) *net.UnixListener {
	match := func(ok func(*inheritedSocket) bool) *net.UnixListener {
		for _, s := range a.socks {
			if !s.used && ok(s) {
				s.used = true
				return s.ln
			}
		}
		return nil
	}
	if l := match(func(s *inheritedSocket) bool { return s.addr != "" && samePath(s.addr, path) }); l != nil {
		return l
	}
	names = append(names, path, filepath.Base(path))
	return match(func(s *inheritedSocket) bool {
		for _, n := range names {
			if s.name != "" && s.name == n {
				return true
			}
		}
		return false
	})
}

// samePath reports whether a and b name the same file: the same cleaned
// path, or the same file on disk.
func samePath(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// unused returns an error naming the inherited sockets nothing took.
func (a *activation) unused() error {
	var left []string
	for _, s := range a.socks {
		if !s.used {
			left = append(left, fmt.Sprintf("fd %d (%s)", s.fd, s.describe()))
		}
	}
	if len(left) == 0 {
		return nil
	}
	return fmt.Errorf("socket activation: %s matches no --socket or --control path: give the socket unit's ListenStream= path as --socket PATH (or --control PATH), or name it with FileDescriptorName=", strings.Join(left, ", "))
}

// close closes the listeners nothing took.
func (a *activation) close() {
	for _, s := range a.socks {
		if !s.used && s.ln != nil {
			s.ln.Close()
		}
	}
}
