package vhostuser

import (
	"errors"
	"fmt"
	"net"
)

// ListenOn makes Serve accept on l, a listening unix socket made by
// someone else: typically inherited from systemd's socket activation
// (LISTEN_FDS), whose socket unit made the file and set its mode. path is
// the name the sessions report (SessionInfo.Path) and the key of
// Options.MACs; "" takes l's own address.
//
// The Server owns l from then on: Serve closes it when it ends, and Close
// before Serve; neither removes the socket file, which is not the
// Server's (a socket unit keeps listening on it for the next start). On
// error l is left to the caller. Call ListenOn before Serve.
func (s *Server) ListenOn(l *net.UnixListener, path string) error {
	if l == nil {
		return errors.New("vhostuser: ListenOn: nil listener")
	}
	if path == "" {
		if a, ok := l.Addr().(*net.UnixAddr); ok {
			path = a.Name
		}
	}
	if len(path) == 0 || len(path) > maxSocketPath {
		return fmt.Errorf("vhostuser: socket path of %d bytes (1..%d)", len(path), maxSocketPath)
	}
	// Closing must not unlink the file (net.FileListener's listeners do
	// not; one from net.ListenUnix would).
	l.SetUnlinkOnClose(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving {
		return errors.New("vhostuser: ListenOn after Serve")
	}
	// fi is nil: listener.close never removes a file it did not make.
	s.listeners = append(s.listeners, &listener{l: l, path: path})
	return nil
}
