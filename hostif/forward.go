package hostif

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults and bounds of a Forwarder.
const (
	// DefaultUDPIdle is how long a UDP session lives without a datagram
	// either way.
	DefaultUDPIdle = 60 * time.Second
	// DefaultMaxUDPSessions bounds the UDP sessions of one forward.
	DefaultMaxUDPSessions = 1024
	// forwardDialTimeout bounds Prepare plus the connection to Target.
	forwardDialTimeout = 5 * time.Second
	// udpPendingMax is how many datagrams a UDP session holds while it is
	// being prepared; later ones are dropped.
	udpPendingMax = 16
	// udpMaxDatagram is the largest UDP payload over IPv4 (65535 - 20 - 8).
	udpMaxDatagram = 65507
	// tcpChunk is how many bytes one splice round may move before the
	// byte counters are updated.
	tcpChunk = 1 << 20
	// maxLoggedErrors bounds the distinct error texts a Forwarder
	// remembers for logging each once.
	maxLoggedErrors = 64
)

// ForwarderOptions configures NewForwarder.
type ForwarderOptions struct {
	// Target is where relayed connections and datagrams go: vhost-arcnet's
	// NAT address and an external port that the NAT engine forwards to the
	// guest's port.
	Target netip.AddrPort
	// Prepare, if not nil, is called before each new TCP connection or new
	// UDP client session is relayed; it resolves the guest and installs
	// the NAT forward from Target's port to it. An error closes that
	// connection (drops that session's datagrams) and is logged once per
	// distinct text; the forward keeps serving. ctx ends after 5 s or when
	// the Forwarder closes, and Prepare must return when it does. It is
	// called from many goroutines at once.
	Prepare func(ctx context.Context) error
	// Logger receives the forward's warnings; nil discards them.
	Logger *slog.Logger
	// UDPIdle is the idle timeout of a UDP session (DefaultUDPIdle when 0).
	UDPIdle time.Duration
	// MaxUDPSessions bounds the UDP sessions (DefaultMaxUDPSessions when
	// 0); a new client beyond it evicts the least recently active one.
	MaxUDPSessions int
}

// ForwarderStats are a Forwarder's counters.
type ForwarderStats struct {
	// Accepted counts TCP connections accepted or UDP sessions opened.
	Accepted uint64
	// Active is the number of TCP connections or UDP sessions open now.
	Active uint64
	// FailedPrepare and FailedDial count connections and sessions closed
	// because Prepare failed or Target could not be reached.
	FailedPrepare, FailedDial uint64
	// ToGuestBytes and FromGuestBytes count payload bytes relayed from
	// host clients to Target and back. TCP bytes are counted at least
	// every MiB and when a direction ends.
	ToGuestBytes, FromGuestBytes uint64
	// UDPExpired counts UDP sessions closed for being idle, UDPEvicted
	// those closed to make room for a new client.
	UDPExpired, UDPEvicted uint64
	// UDPDropped counts datagrams dropped: while their session was being
	// prepared (more than 16, or Prepare failed) or by a failed send.
	UDPDropped uint64
}

// Forwarder relays one port forward: it accepts TCP connections (or
// receives UDP datagrams) on the spec's host address and port and relays
// each connection (each client's datagrams) to Target. It uses only the
// net package, so it works on every platform.
//
// Each TCP connection is copied both ways with io.Copy between the two
// kernel sockets (splice(2) on Linux), half-closes propagated. Each UDP
// client address gets its own connected UDP socket toward Target; its
// replies go back to that client from the listening socket.
type Forwarder struct {
	spec ForwardSpec
	opt  ForwarderOptions
	log  *slog.Logger

	tcp *net.TCPListener // when spec.Proto is "tcp"
	udp *net.UDPConn     // when spec.Proto is "udp"

	ctx    context.Context // ends at shutdown
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	serving   bool
	serveDone chan struct{}                  // closed when Serve returned
	conns     map[net.Conn]struct{}          // TCP: both sides of every relayed connection
	sessions  map[netip.AddrPort]*udpSession // UDP: by client address
	wg        sync.WaitGroup                 // relay goroutines; Add only under mu while !closed

	epoch time.Time // of udpSession.last

	logMu  sync.Mutex
	logged map[string]bool

	accepted, active, failedPrepare, failedDial atomic.Uint64
	toGuest, fromGuest                          atomic.Uint64
	udpExpired, udpEvicted, udpDropped          atomic.Uint64
}

// NewForwarder binds the forward's host address and port now, so that a
// port in use is reported at startup; Serve then relays. A HostPort of 0
// binds a free port (Addr tells which), for tests.
func NewForwarder(spec ForwardSpec, opt ForwarderOptions) (*Forwarder, error) {
	name := spec.Proto + ":" + spec.HostAddrPort().String()
	if !opt.Target.IsValid() || opt.Target.Port() == 0 {
		return nil, fmt.Errorf("forward %s: no target address", name)
	}
	if opt.UDPIdle <= 0 {
		opt.UDPIdle = DefaultUDPIdle
	}
	if opt.MaxUDPSessions <= 0 {
		opt.MaxUDPSessions = DefaultMaxUDPSessions
	}
	f := &Forwarder{spec: spec, opt: opt, log: opt.Logger, logged: map[string]bool{}, epoch: time.Now()}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.log = f.log.With("forward", spec.String())
	addr := spec.HostAddrPort()
	var err error
	switch spec.Proto {
	case "tcp":
		f.tcp, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
		f.conns = map[net.Conn]struct{}{}
	case "udp":
		f.udp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		f.sessions = map[netip.AddrPort]*udpSession{}
	default:
		return nil, fmt.Errorf("forward %s: protocol %q: want tcp or udp", name, spec.Proto)
	}
	if err != nil {
		return nil, bindError(name, addr, err)
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f, nil
}

// forwardBindError is a failed bind said in words a user can act on; it
// unwraps to the listen error.
type forwardBindError struct {
	msg string
	err error
}

func (e *forwardBindError) Error() string { return e.msg }
func (e *forwardBindError) Unwrap() error { return e.err }

func bindError(name string, addr netip.AddrPort, err error) error {
	var msg string
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		msg = fmt.Sprintf("forward %s: port %d is already in use on %s: choose another HOSTPORT", name, addr.Port(), addr.Addr())
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		msg = fmt.Sprintf("forward %s: ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a HOSTPORT of 1024 or more, or grant the capability", name)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		msg = fmt.Sprintf("forward %s: %s is not an address of this host: choose another HOSTADDR", name, addr.Addr())
	default:
		return fmt.Errorf("forward %s: %w", name, err)
	}
	return &forwardBindError{msg: msg, err: err}
}

// Spec returns the forward's spec.
func (f *Forwarder) Spec() ForwardSpec { return f.spec }

// Addr is the address the forward listens on.
func (f *Forwarder) Addr() net.Addr {
	if f.tcp != nil {
		return f.tcp.Addr()
	}
	return f.udp.LocalAddr()
}

// Stats returns the forward's counters.
func (f *Forwarder) Stats() ForwarderStats {
	return ForwarderStats{
		Accepted:       f.accepted.Load(),
		Active:         f.active.Load(),
		FailedPrepare:  f.failedPrepare.Load(),
		FailedDial:     f.failedDial.Load(),
		ToGuestBytes:   f.toGuest.Load(),
		FromGuestBytes: f.fromGuest.Load(),
		UDPExpired:     f.udpExpired.Load(),
		UDPEvicted:     f.udpEvicted.Load(),
		UDPDropped:     f.udpDropped.Load(),
	}
}

// Serve relays until ctx ends or Close is called, then closes the listener
// and every relayed connection and returns nil once all of them have
// ended. It may be called once.
func (f *Forwarder) Serve(ctx context.Context) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	if f.serving {
		f.mu.Unlock()
		return fmt.Errorf("forward %s: Serve called twice", f.spec)
	}
	f.serving = true
	f.serveDone = make(chan struct{})
	f.mu.Unlock()
	defer close(f.serveDone)

	stop := context.AfterFunc(ctx, f.shutdown)
	defer stop()
	var err error
	if f.tcp != nil {
		err = f.serveTCP()
	} else {
		err = f.serveUDP()
	}
	f.shutdown()
	f.wg.Wait()
	return err
}

// Close closes the listener and every relayed connection, and returns when
// Serve and every relay goroutine have ended. It may be called more than
// once and concurrently with Serve.
func (f *Forwarder) Close() error {
	f.shutdown()
	f.mu.Lock()
	done := f.serveDone
	f.mu.Unlock()
	if done != nil {
		<-done
	}
	f.wg.Wait()
	return nil
}

// shutdown closes everything once, without waiting.
func (f *Forwarder) shutdown() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	f.cancel()
	if f.tcp != nil {
		f.tcp.Close()
	} else {
		f.udp.Close()
	}
	for c := range f.conns {
		c.Close()
	}
	for _, s := range f.sessions {
		f.closeSession(s)
	}
}

// goRelay runs fn on a tracked goroutine, or reports false after shutdown.
// f.mu must be held.
func (f *Forwarder) goRelay(fn func()) bool {
	if f.closed {
		return false
	}
	f.wg.Go(fn)
	return true
}

// logOnce logs err at warning level the first time its text is seen, so
// that a guest that is down does not flood the log with one line per
// connection.
func (f *Forwarder) logOnce(msg string, err error) {
	text := msg + ": " + err.Error()
	f.logMu.Lock()
	seen := f.logged[text]
	full := len(f.logged) >= maxLoggedErrors
	if !seen && !full {
		f.logged[text] = true
	}
	f.logMu.Unlock()
	switch {
	case seen:
	case full:
		// Forget the texts: a forward that fails in ever new ways logs
		// again, at most once per maxLoggedErrors connections.
		f.logMu.Lock()
		clear(f.logged)
		f.logMu.Unlock()
		f.log.Warn(msg, "err", err, "note", "further errors of this forward are logged once per distinct text")
	default:
		f.log.Warn(msg, "err", err)
	}
}

// prepare runs opt.Prepare, bounded by the dial timeout.
func (f *Forwarder) prepare(ctx context.Context) error {
	if f.opt.Prepare == nil {
		return nil
	}
	if err := f.opt.Prepare(ctx); err != nil {
		f.failedPrepare.Add(1)
		f.logOnce("port forward: guest not reachable", err)
		return err
	}
	return nil
}

// serveTCP accepts until the listener is closed.
func (f *Forwarder) serveTCP() error {
	var delay time.Duration
	for {
		c, err := f.tcp.AcceptTCP()
		if err != nil {
			if f.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off, as
			// net/http's Server does, and keep serving.
			f.logOnce("port forward: accept", err)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-f.ctx.Done():
				return nil
			}
			continue
		}
		delay = 0
		f.accepted.Add(1)
		f.mu.Lock()
		ok := f.goRelay(func() { f.relayTCP(c) })
		if ok {
			f.conns[c] = struct{}{}
		}
		f.mu.Unlock()
		if !ok {
			c.Close()
			return nil
		}
	}
}

// track adds c to the connections closed at shutdown, or closes it and
// reports false after shutdown.
func (f *Forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

// untrack closes c and forgets it.
func (f *Forwarder) untrack(c net.Conn) {
	c.Close()
	f.mu.Lock()
	if f.conns != nil {
		delete(f.conns, c)
	}
	f.mu.Unlock()
}

// relayTCP prepares, dials Target and copies both ways until both
// directions have ended.
func (f *Forwarder) relayTCP(down *net.TCPConn) {
	f.active.Add(1)
	defer f.active.Add(^uint64(0))
	defer f.untrack(down)

	ctx, cancel := context.WithTimeout(f.ctx, forwardDialTimeout)
	defer cancel()
	if err := f.prepare(ctx); err != nil {
		_ = down.SetLinger(0) // reset: the client learns at once
		return
	}
	d := net.Dialer{}
	c, err := d.DialContext(ctx, "tcp", f.opt.Target.String())
	if err != nil {
		if f.ctx.Err() == nil {
			f.failedDial.Add(1)
			f.logOnce("port forward: connect to the guest", err)
			_ = down.SetLinger(0)
		}
		return
	}
	up := c.(*net.TCPConn)
	if !f.track(up) {
		return
	}
	defer f.untrack(up)

	var wg sync.WaitGroup
	wg.Go(func() { f.copyTCP(up, down, &f.toGuest) })
	f.copyTCP(down, up, &f.fromGuest)
	wg.Wait()
}

// copyTCP copies src to dst until src's EOF, then half-closes dst; on an
// error it closes both, which ends the other direction too. CopyN keeps
// the kernel's splice path (net.TCPConn.ReadFrom takes an
// io.LimitedReader) while counting at least every tcpChunk bytes.
func (f *Forwarder) copyTCP(dst, src *net.TCPConn, count *atomic.Uint64) {
	for {
		n, err := io.CopyN(dst, src, tcpChunk)
		count.Add(uint64(n))
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			if dst.CloseWrite() == nil {
				return
			}
		}
		dst.Close()
		src.Close()
		return
	}
}

// udpSession is one UDP client's relay: a socket connected to Target,
// created once Prepare succeeded.
type udpSession struct {
	client netip.AddrPort
	last   atomic.Int64 // time.Since(f.epoch) of the last datagram either way

	// Guarded by Forwarder.mu.
	conn    *net.UDPConn // nil while preparing
	pending [][]byte     // datagrams received while preparing
	closed  bool
}

// touch records activity now.
func (f *Forwarder) touch(s *udpSession) { s.last.Store(int64(time.Since(f.epoch))) }

// closeSession closes s and forgets it; f.mu must be held.
func (f *Forwarder) closeSession(s *udpSession) {
	if s.closed {
		return
	}
	s.closed = true
	if s.conn != nil {
		s.conn.Close()
	}
	f.udpDropped.Add(uint64(len(s.pending)))
	s.pending = nil
	if f.sessions[s.client] == s {
		delete(f.sessions, s.client)
	}
	f.active.Add(^uint64(0))
}

// serveUDP receives until the socket is closed: datagrams of known
// clients go straight to their session's socket, a new client opens a
// session.
func (f *Forwarder) serveUDP() error {
	f.mu.Lock()
	f.goRelay(f.expireUDP)
	f.mu.Unlock()
	buf := make([]byte, udpMaxDatagram+1)
	for {
		n, from, err := f.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if f.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			f.logOnce("port forward: receive", err)
			continue
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return nil
		}
		s := f.sessions[from]
		if s == nil {
			s = f.newSession(from)
		}
		f.touch(s)
		conn := s.conn
		if conn == nil {
			if len(s.pending) < udpPendingMax {
				s.pending = append(s.pending, append([]byte(nil), buf[:n]...))
			} else {
				f.udpDropped.Add(1)
			}
		}
		f.mu.Unlock()
		if conn != nil {
			if _, err := conn.Write(buf[:n]); err != nil {
				f.udpDropped.Add(1)
			} else {
				f.toGuest.Add(uint64(n))
			}
		}
	}
}

// newSession opens a session for client, evicting the least recently
// active one if there are MaxUDPSessions already; f.mu must be held and
// f not closed.
func (f *Forwarder) newSession(client netip.AddrPort) *udpSession {
	if len(f.sessions) >= f.opt.MaxUDPSessions {
		var oldest *udpSession
		for _, s := range f.sessions {
			if oldest == nil || s.last.Load() < oldest.last.Load() {
				oldest = s
			}
		}
		f.closeSession(oldest)
		f.udpEvicted.Add(1)
	}
	s := &udpSession{client: client}
	f.sessions[client] = s
	f.accepted.Add(1)
	f.active.Add(1)
	f.goRelay(func() { f.relayUDP(s) })
	return s
}

// relayUDP prepares s, connects its socket to Target, sends the datagrams
// that arrived meanwhile, then relays replies to the client until the
// session is closed.
func (f *Forwarder) relayUDP(s *udpSession) {
	ctx, cancel := context.WithTimeout(f.ctx, forwardDialTimeout)
	err := f.prepare(ctx)
	cancel()
	var c *net.UDPConn
	if err == nil {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(f.opt.Target))
		if err != nil {
			f.failedDial.Add(1)
			f.logOnce("port forward: connect to the guest", err)
		}
	}
	f.mu.Lock()
	if err != nil || s.closed {
		f.closeSession(s)
		f.mu.Unlock()
		if c != nil {
			c.Close()
		}
		return
	}
	// Flushed under the lock, so that datagrams the receive loop sends
	// once s.conn is set cannot overtake these.
	for _, p := range s.pending {
		if _, err := c.Write(p); err != nil {
			f.udpDropped.Add(1)
		} else {
			f.toGuest.Add(uint64(len(p)))
		}
	}
	s.pending = nil
	s.conn = c
	f.mu.Unlock()

	buf := make([]byte, udpMaxDatagram+1)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				// An ICMP port unreachable for an earlier datagram: the
				// guest's port is closed now; it may open later.
				continue
			}
			f.logOnce("port forward: receive from the guest", err)
			f.mu.Lock()
			f.closeSession(s)
			f.mu.Unlock()
			return
		}
		f.touch(s)
		if _, err := f.udp.WriteToUDPAddrPort(buf[:n], s.client); err != nil {
			f.udpDropped.Add(1)
			continue
		}
		f.fromGuest.Add(uint64(n))
	}
}

// expireUDP closes sessions idle for UDPIdle, checking four times per
// UDPIdle, until shutdown.
func (f *Forwarder) expireUDP() {
	t := time.NewTicker(max(f.opt.UDPIdle/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		}
		idleSince := int64(time.Since(f.epoch) - f.opt.UDPIdle)
		f.mu.Lock()
		for _, s := range f.sessions {
			if s.last.Load() <= idleSince {
				f.closeSession(s)
				f.udpExpired.Add(1)
			}
		}
		f.mu.Unlock()
	}
}
