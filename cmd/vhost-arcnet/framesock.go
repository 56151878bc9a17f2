package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// Frame-socket guests (--listen-stream, --listen-dgram): each peer is a
// guest port on the switch like a vhost-user guest (datapath/framesock.go).

// frameSockAddr is one --listen-stream value: a unix socket path, or a TCP
// HOST:PORT.
type frameSockAddr struct {
	tcp  bool
	addr string
}

func (a frameSockAddr) String() string { return a.addr }

// parseStreamAddr reads --listen-stream: HOST:PORT with a numeric port and
// no slash is TCP (an IPv6 host in brackets); anything else a unix path.
func parseStreamAddr(s string) (frameSockAddr, error) {
	if s == "" {
		return frameSockAddr{}, errors.New("empty path")
	}
	if !strings.Contains(s, "/") {
		if host, port, err := net.SplitHostPort(s); err == nil {
			if _, err := netip.ParseAddrPort(net.JoinHostPort(orAny(host), port)); err != nil && host != "localhost" {
				return frameSockAddr{}, fmt.Errorf("want a unix socket path or a TCP IP:PORT: %v", err)
			}
			return frameSockAddr{tcp: true, addr: s}, nil
		}
	}
	return frameSockAddr{addr: s}, nil
}

func orAny(host string) string {
	if host == "" {
		return "0.0.0.0"
	}
	return host
}

// checkFrameSockets checks the frame-socket flags against the rest.
func (c *config) checkFrameSockets(f *flags) error {
	if len(c.streams)+len(c.dgrams) == 0 {
		return nil
	}
	key := "listen-stream"
	if len(c.streams) == 0 {
		key = "listen-dgram"
	}
	if c.uplink != "none" && c.uplink != "tap" && !strings.HasPrefix(c.uplink, "tap:") {
		return f.errf(key, "attaches guests to the switch, which --uplink %s bypasses: use --uplink none or tap", c.uplink)
	}
	seen := map[string]bool{}
	for _, p := range c.sockets {
		seen[p] = true
	}
	for _, a := range c.streams {
		if seen[a.addr] {
			return f.errf("listen-stream", "%s is given twice", a.addr)
		}
		seen[a.addr] = true
	}
	for _, p := range c.dgrams {
		if seen[p] {
			return f.errf("listen-dgram", "%s is given twice", p)
		}
		seen[p] = true
	}
	return nil
}

// firstFrameSocketPath is the first unix path of the frame sockets ("" for
// none), for the default lease file.
func (c *config) firstFrameSocketPath() string {
	for _, a := range c.streams {
		if !a.tcp {
			return a.addr
		}
	}
	if len(c.dgrams) > 0 {
		return c.dgrams[0]
	}
	return ""
}

// frameSockets are the running frame-socket listeners.
type frameSockets struct {
	log     *slog.Logger
	closers []func()
	wg      sync.WaitGroup
}

// frameIDs numbers frame-socket ports in the port registry apart from the
// vhost-user sessions' IDs (which count from 1).
var frameIDs atomic.Uint64

const frameIDBase = 1 << 62

// startFrameSockets opens the --listen-stream and --listen-dgram sockets
// and serves them until close.
func startFrameSockets(cfg *config, gnet *network, reg *ports, log *slog.Logger) (*frameSockets, error) {
	s := &frameSockets{log: log}
	opts := func(kind, path string) datapath.FrameSockOptions {
		ids := map[*datapath.FramePort]uint64{}
		var mu sync.Mutex
		return datapath.FrameSockOptions{
			Path: path, MTU: cfg.mtu, Logger: log, Name: reg.name,
			Attach: func(p *datapath.FramePort, peer string) error {
				sp, err := gnet.sw.Attach(p, datapath.PortOptions{AllowSpoofing: cfg.allowSpoofing})
				if err != nil {
					return err
				}
				id := frameIDBase + frameIDs.Add(1)
				mu.Lock()
				ids[p] = id
				mu.Unlock()
				reg.add(id, &guest{frame: p, sw: sp, kind: kind, info: vhostuser.SessionInfo{ID: id, Path: path}})
				log.Info("guest port attached", "port", p.Name(), "socket", kind, "path", path, "peer", peer)
				return nil
			},
			Detach: func(p *datapath.FramePort, err error) {
				mu.Lock()
				id, ok := ids[p]
				delete(ids, p)
				mu.Unlock()
				if !ok {
					return
				}
				g := reg.end(id)
				if g == nil {
					return
				}
				attrs := []any{"port", p.Name(), "socket", kind, "path", path, "err", err}
				if m, ok := g.sw.MAC(); ok {
					attrs = append(attrs, "mac", net.HardwareAddr(m[:]).String())
				}
				gnet.sw.Detach(g.sw)
				log.Info("guest port detached", attrs...)
				datapath.LogStats(log, p)
			},
		}
	}
	for _, a := range cfg.streams {
		var (
			ln  net.Listener
			err error
		)
		if a.tcp {
			ln, err = net.Listen("tcp", a.addr)
			if err == nil && !isLoopback(ln.Addr()) {
				log.Warn("frame socket listens beyond this host: anyone who reaches it attaches a guest", "addr", ln.Addr().String())
			}
		} else {
			var fi fs.FileInfo
			var ul *net.UnixListener
			ul, fi, err = vhostuser.ListenUnix(a.addr, cfg.socketMode, cfg.socketGID)
			if err == nil {
				ln = ul
				s.removeOnClose(a.addr, fi)
			}
		}
		if err != nil {
			s.close()
			return nil, fmt.Errorf("--listen-stream %s: %w", a.addr, err)
		}
		l := datapath.NewStreamListener(ln, opts("stream", a.addr))
		s.serve(l.Serve, func() { _ = l.Close() })
		log.Info("listening for frame-socket guests", "socket", "stream", "addr", ln.Addr().String())
	}
	for _, path := range cfg.dgrams {
		c, fi, err := vhostuser.ListenUnixgram(path, cfg.socketMode, cfg.socketGID)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("--listen-dgram %s: %w", path, err)
		}
		s.removeOnClose(path, fi)
		l, err := datapath.NewDgramListener(c, opts("dgram", path))
		if err != nil {
			_ = c.Close()
			s.close()
			return nil, err
		}
		s.serve(l.Serve, func() { _ = l.Close() })
		log.Info("listening for frame-socket guests", "socket", "dgram", "path", path)
	}
	return s, nil
}

func (s *frameSockets) serve(serve func() error, stop func()) {
	s.wg.Go(func() {
		if err := serve(); err != nil {
			s.log.Error("frame socket stopped", "err", err)
		}
	})
	s.closers = append([]func(){stop}, s.closers...)
}

// removeOnClose removes the socket file at path when the sockets close, if
// it is still the one made (fi).
func (s *frameSockets) removeOnClose(path string, fi fs.FileInfo) {
	s.closers = append(s.closers, func() {
		if now, err := os.Lstat(path); err == nil && os.SameFile(now, fi) {
			_ = os.Remove(path)
		}
	})
}

// close stops every listener (their peers' ports end and detach) and
// removes the socket files.
func (s *frameSockets) close() {
	if s == nil {
		return
	}
	for _, c := range s.closers {
		c()
	}
	s.closers = nil
	s.wg.Wait()
}

func isLoopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}
