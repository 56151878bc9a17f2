package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// Options configure a Server.
type Options struct {
	// Features are the virtio features offered in GET_FEATURES; zero means
	// DefaultFeatures. Include FProtocolFeatures for protocol features
	// (and SET_VRING_ENABLE), FLogAll for live migration.
	Features uint64
	// ProtocolFeatures are offered in GET_PROTOCOL_FEATURES; zero means
	// DefaultProtocolFeatures. Must be a subset of
	// SupportedProtocolFeatures.
	ProtocolFeatures uint64
	// QueuePairs is the number of queue pairs per device (GET_QUEUE_NUM
	// answers twice that: the number of virtqueues); zero means 1. At most
	// 128: ring indexes in SET_VRING_KICK have 8 bits. VIRTIO_NET_F_MQ is
	// offered only with more than one.
	QueuePairs int
	// MTU is the largest MTU NET_SET_MTU accepts, and the mtu of the
	// config space (VIRTIO_NET_F_MTU); zero means 65535.
	MTU uint16
	// MACs sets the MAC addresses of the guest ports of a socket (the mac
	// field of their config space, VIRTIO_NET_F_MAC, and SessionInfo.MAC),
	// keyed by the socket path as given to Listen or Connect. The port in
	// slot 0 of the socket (SessionInfo.Slot) gets the address; the port
	// in slot k, connected while slots 0..k-1 are taken, gets it plus k in
	// its last three octets. Ports of sockets not in the map get
	// GenerateMAC(path, slot). Every address must be unicast.
	MACs map[string][6]byte
	// LinkSpeed is the speed the config space reports
	// (VIRTIO_NET_F_SPEED_DUPLEX), in Mbit/s; zero means unknown
	// (SpeedUnknown). The duplex is always full.
	LinkSpeed uint32
	// MaxMemSlots is the GET_MAX_MEM_SLOTS answer and the most regions a
	// session maps; zero means DefaultMaxMemSlots. 8..512.
	MaxMemSlots int
	// MaxGuestMemory bounds the guest memory one session maps (the sum of
	// its region sizes), so that a frontend cannot exhaust the process's
	// address space; zero means DefaultMaxGuestMemory.
	MaxGuestMemory uint64
	// MaxMemory bounds the guest memory all sessions of the server map
	// together (the sum of every session's region sizes): a SET_MEM_TABLE
	// or ADD_MEM_REG that would go above it is refused (a non-zero ack
	// with REPLY_ACK, one log line naming the limit; the session goes on
	// with the memory it had). It keeps many frontends from exhausting the
	// process's address space, which MaxGuestMemory alone does not. Zero
	// means DefaultMaxMemory (64 GiB); at most 128 TiB.
	MaxMemory uint64
	// SocketMode is the permission of sockets made by Listen; zero means
	// 0600.
	SocketMode fs.FileMode
	// SocketGroup, if not empty, is the group (a name or a numeric gid)
	// given to the sockets made by Listen, before frontends can connect
	// to them: with a SocketMode such as 0660 the members of that group
	// may connect. The process must be root or a member of the group.
	// Sockets passed by the service manager (socket activation) are left
	// as they are.
	SocketGroup string
	// ReconnectMin and ReconnectMax bound the client role's backoff between
	// connection attempts: it starts at ReconnectMin and doubles up to
	// ReconnectMax. Zero means 100 ms and 5 s.
	ReconnectMin, ReconnectMax time.Duration
	// Logger receives the server's records; nil means slog.Default().
	Logger *slog.Logger
	// NewDevice returns the device of a new session (one per connection).
	// An error refuses the connection (counted in Stats.Refused; no
	// session starts, OnSessionEnd is not called). Required.
	NewDevice func(info SessionInfo) (Device, error)
	// OnSessionEnd, if set, is called once per session after it ended and
	// released everything (its Device is closed). err is nil for a clean
	// disconnect or a shutdown.
	OnSessionEnd func(info SessionInfo, err error)
}

// config is the validated, immutable form of Options that sessions share.
type config struct {
	features     uint64
	proto        uint64
	queuePairs   int
	mtu          uint16
	macs         map[string][6]byte // keyed by macPath
	linkSpeed    uint32
	maxMemSlots  int
	maxMemory    uint64     // per session
	budget       *memBudget // all sessions
	socketMode   fs.FileMode
	socketGID    int // -1: leave the group alone
	reconnectMin time.Duration
	reconnectMax time.Duration
	log          *slog.Logger
	newDevice    func(SessionInfo) (Device, error)
	onEnd        func(SessionInfo, error)
}

func (o Options) config() (config, error) {
	c := config{
		features: o.Features, proto: o.ProtocolFeatures, queuePairs: o.QueuePairs, mtu: o.MTU,
		maxMemSlots: o.MaxMemSlots, maxMemory: o.MaxGuestMemory, socketMode: o.SocketMode, reconnectMin: o.ReconnectMin,
		reconnectMax: o.ReconnectMax, log: o.Logger, newDevice: o.NewDevice, onEnd: o.OnSessionEnd,
	}
	if c.features == 0 {
		c.features = DefaultFeatures
	}
	if c.proto == 0 {
		c.proto = DefaultProtocolFeatures
	}
	if c.proto&ProtocolFConfig == 0 {
		// MAC, STATUS and SPEED_DUPLEX promise fields of a config space
		// that is not served.
		c.features &^= configFeatures
	}
	c.linkSpeed = o.LinkSpeed
	if c.linkSpeed == 0 || c.linkSpeed > 0x7fffffff {
		// virtio 1.2 §5.1.4: "0 to 0x7fffffff, or 0xffffffff for unknown".
		c.linkSpeed = SpeedUnknown
	}
	c.macs = make(map[string][6]byte, len(o.MACs))
	for path, mac := range o.MACs {
		if mac[0]&1 != 0 || mac == ([6]byte{}) {
			return c, fmt.Errorf("vhostuser: MAC %s of %s is not a unicast address", macString(mac), path)
		}
		c.macs[macPath(path)] = mac
	}
	if c.queuePairs == 0 {
		c.queuePairs = 1
	}
	if c.queuePairs == 1 {
		// VIRTIO_NET_F_MQ means nothing with one queue pair, and Linux's
		// virtio_net refuses a device that offers it without
		// VIRTIO_NET_F_CTRL_VQ (drivers/net/virtio_net.c
		// virtnet_validate_features), which this backend does not offer:
		// crosvm and cloud-hypervisor show the guest the backend's bits.
		c.features &^= virtio.NetFMQ
	}
	if c.mtu == 0 {
		c.mtu = 65535
	}
	if c.maxMemSlots == 0 {
		c.maxMemSlots = DefaultMaxMemSlots
	}
	if c.maxMemory == 0 {
		c.maxMemory = DefaultMaxGuestMemory
	}
	c.budget = &memBudget{limit: o.MaxMemory}
	if c.budget.limit == 0 {
		c.budget.limit = DefaultMaxMemory
	}
	if c.socketMode == 0 {
		c.socketMode = 0o600
	}
	c.socketGID = -1
	if o.SocketGroup != "" {
		gid, err := LookupGroup(o.SocketGroup)
		if err != nil {
			return c, err
		}
		c.socketGID = gid
	}
	if c.reconnectMin <= 0 {
		c.reconnectMin = 100 * time.Millisecond
	}
	if c.reconnectMax <= 0 {
		c.reconnectMax = 5 * time.Second
	}
	c.reconnectMax = max(c.reconnectMax, c.reconnectMin)
	if c.log == nil {
		c.log = slog.Default()
	}
	switch {
	case c.newDevice == nil:
		return c, errors.New("vhostuser: Options.NewDevice is required")
	case c.features&unsupportedFeatures != 0:
		return c, fmt.Errorf("vhostuser: features %#x are not supported", c.features&unsupportedFeatures)
	case c.proto&^SupportedProtocolFeatures != 0:
		return c, fmt.Errorf("vhostuser: protocol features %s are not supported", protocolFeatureString(c.proto&^SupportedProtocolFeatures))
	case c.queuePairs < 1 || c.queuePairs > 128:
		return c, fmt.Errorf("vhostuser: %d queue pairs (1..128)", c.queuePairs)
	case c.mtu < minMTU:
		return c, fmt.Errorf("vhostuser: MTU %d below %d", c.mtu, minMTU)
	case c.maxMemSlots < maxTableRegions || c.maxMemSlots > 512:
		return c, fmt.Errorf("vhostuser: %d memory slots (%d..512)", c.maxMemSlots, maxTableRegions)
	case c.maxMemory > maxMapSize:
		return c, fmt.Errorf("vhostuser: guest memory limit %#x above %#x", c.maxMemory, uint64(maxMapSize))
	case c.budget.limit > maxMapSize:
		return c, fmt.Errorf("vhostuser: server guest memory limit %#x above %#x", c.budget.limit, uint64(maxMapSize))
	case c.socketMode&^fs.ModePerm != 0:
		return c, fmt.Errorf("vhostuser: socket mode %v has more than permission bits", c.socketMode)
	}
	return c, nil
}

// Stats are a Server's counters.
type Stats struct {
	Sessions     uint64 // sessions started (accepted or connected)
	Active       uint64 // sessions running now
	Messages     uint64 // requests handled successfully, all sessions
	Errors       uint64 // sessions ended by a frontend error (bad message, bad memory, ...)
	Disconnects  uint64 // sessions ended by the frontend closing the connection
	Refused      uint64 // connections refused because NewDevice failed
	DialFailures uint64 // client role: connection attempts that failed
	// Faults counts sessions ended by a fault in their guest memory (the
	// frontend shrank the file behind it; counted in Errors too).
	Faults uint64
	// Memory is the guest memory all sessions map now, in bytes, and
	// MemoryLimit the most they may (Options.MaxMemory).
	Memory, MemoryLimit uint64
}

// Server serves vhost-user frontends: on sockets it listens on (Listen), on
// frontends' sockets it connects to and reconnects to (Connect), and on
// connections handed to it (ServeConn). Every connection is a Session with
// a Device of its own; a frontend that misbehaves, disconnects or crashes
// ends its session only.
type Server struct {
	cfg config

	mu        sync.Mutex
	listeners []*listener
	targets   []string
	sessions  map[*Session]struct{}
	slots     map[string][]bool // per macPath: which connection slots live sessions hold
	serving   bool

	nextID       atomic.Uint64
	started      atomic.Uint64
	messages     atomic.Uint64 // of ended sessions
	errors       atomic.Uint64
	disconnects  atomic.Uint64
	refused      atomic.Uint64
	dialFailures atomic.Uint64
	faults       atomic.Uint64
}

// NewServer validates opts and returns a Server that serves nothing yet.
func NewServer(opts Options) (*Server, error) {
	cfg, err := opts.config()
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, sessions: make(map[*Session]struct{}), slots: make(map[string][]bool)}, nil
}

// Listen creates a listening socket at path now (so that errors surface
// before Serve), with mode Options.SocketMode and group
// Options.SocketGroup. A stale socket file (one nobody accepts on) is
// replaced; any other file at path is an error. Connections are accepted
// once Serve runs. Call Listen before Serve.
func (s *Server) Listen(path string) error {
	l, err := listen(path, s.cfg.socketMode, s.cfg.socketGID)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving {
		l.close()
		return errors.New("vhostuser: Listen after Serve")
	}
	s.listeners = append(s.listeners, l)
	return nil
}

// Connect makes Serve connect to a frontend's listening socket at path
// (QEMU -chardev socket,server=on) and reconnect with backoff whenever the
// connection fails or ends. Call Connect before Serve.
func (s *Server) Connect(path string) error {
	if len(path) == 0 || len(path) > maxSocketPath {
		return fmt.Errorf("vhostuser: socket path of %d bytes (1..%d)", len(path), maxSocketPath)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving {
		return errors.New("vhostuser: Connect after Serve")
	}
	s.targets = append(s.targets, path)
	return nil
}

// Close releases the listening sockets of a Server whose Serve will not
// run (after a later Listen failed, say), removing their socket files.
// Serve releases them itself; Close does nothing once Serve has started.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving {
		return
	}
	for _, l := range s.listeners {
		l.close()
	}
	s.listeners = nil
}

// Serve accepts and connects until ctx is done, then closes the listeners
// (removing their socket files) and every session (stopping its queues,
// closing its device, unmapping its memory) and returns nil.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("vhostuser: Serve called twice")
	}
	s.serving = true
	listeners, targets := s.listeners, s.targets
	s.mu.Unlock()

	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Go(func() { s.acceptLoop(ctx, l, &wg) })
	}
	for _, path := range targets {
		wg.Go(func() { s.dialLoop(ctx, path) })
	}
	<-ctx.Done()
	for _, l := range listeners {
		l.close()
	}
	wg.Wait()
	return nil
}

// ServeConn runs one session on c until the frontend disconnects, breaks
// the protocol, or ctx is done; it returns the session's error (nil for a
// clean end). It does not need Serve.
func (s *Server) ServeConn(ctx context.Context, c *net.UnixConn) error {
	return s.runSession(ctx, c, RoleServer, "")
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Sessions:     s.started.Load(),
		Messages:     s.messages.Load(),
		Errors:       s.errors.Load(),
		Disconnects:  s.disconnects.Load(),
		Refused:      s.refused.Load(),
		DialFailures: s.dialFailures.Load(),
		Faults:       s.faults.Load(),
		Memory:       s.cfg.budget.used.Load(),
		MemoryLimit:  s.cfg.budget.limit,
	}
	s.mu.Lock()
	for sess := range s.sessions {
		st.Active++
		st.Messages += sess.messages.Load()
	}
	s.mu.Unlock()
	return st
}

// Sessions returns the sessions running now.
func (s *Server) Sessions() []*Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Session, 0, len(s.sessions))
	for sess := range s.sessions {
		out = append(out, sess)
	}
	return out
}

func (s *Server) acceptLoop(ctx context.Context, l *listener, wg *sync.WaitGroup) {
	delay := 5 * time.Millisecond
	for {
		c, err := l.l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of fds, say: wait a little, do not spin.
			s.cfg.log.Warn("vhost-user accept failed", "path", l.path, "err", err)
			if !sleepCtx(ctx, delay) {
				return
			}
			delay = min(2*delay, time.Second)
			continue
		}
		delay = 5 * time.Millisecond
		wg.Go(func() { _ = s.runSession(ctx, c, RoleServer, l.path) })
	}
}

// dialLoop is the client role: connect, serve, and after a failure or the
// end of a session reconnect, waiting ReconnectMin, doubling up to
// ReconnectMax while attempts fail.
func (s *Server) dialLoop(ctx context.Context, path string) {
	backoff := s.cfg.reconnectMin
	var d net.Dialer
	announced := false
	for {
		c, err := d.DialContext(ctx, "unix", path)
		switch {
		case ctx.Err() != nil:
			if c != nil {
				_ = c.Close()
			}
			return
		case err != nil:
			s.dialFailures.Add(1)
			if !announced {
				s.cfg.log.Info("vhost-user frontend not reachable, retrying", "path", path, "err", err)
				announced = true
			}
		default:
			announced = false
			serr := s.runSession(ctx, c.(*net.UnixConn), RoleClient, path)
			if ctx.Err() != nil {
				return
			}
			if serr == nil {
				// A clean session: the frontend restarts, come back soon.
				backoff = s.cfg.reconnectMin
			}
		}
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, s.cfg.reconnectMax)
	}
}

// takeSlot gives a new connection on the socket at path the lowest free
// slot and its MAC address (Options.MACs, else GenerateMAC).
func (s *Server) takeSlot(path string) (slot int, mac [6]byte) {
	key := macPath(path)
	s.mu.Lock()
	used := s.slots[key]
	for slot < len(used) && used[slot] {
		slot++
	}
	if slot == len(used) {
		used = append(used, false)
	}
	used[slot] = true
	s.slots[key] = used
	s.mu.Unlock()
	if base, ok := s.cfg.macs[key]; ok {
		return slot, macPlus(base, slot)
	}
	return slot, GenerateMAC(path, slot)
}

// releaseSlot frees the slot of an ended connection.
func (s *Server) releaseSlot(path string, slot int) {
	key := macPath(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	used := s.slots[key]
	if slot < len(used) {
		used[slot] = false
	}
	for len(used) > 0 && !used[len(used)-1] {
		used = used[:len(used)-1]
	}
	if len(used) == 0 {
		delete(s.slots, key)
	} else {
		s.slots[key] = used
	}
}

// runSession serves one connection; it owns c.
func (s *Server) runSession(ctx context.Context, c *net.UnixConn, role Role, path string) error {
	info := SessionInfo{ID: s.nextID.Add(1), Role: role, Path: path}
	info.Slot, info.MAC = s.takeSlot(path)
	dev, err := s.cfg.newDevice(info)
	if err == nil && dev == nil {
		err = errors.New("NewDevice returned no device")
	}
	if err != nil {
		s.releaseSlot(path, info.Slot)
		_ = c.Close()
		s.refused.Add(1)
		s.cfg.log.Error("vhost-user connection refused: no device", "session", info.ID, "path", path, "err", err)
		return fmt.Errorf("vhostuser: new device: %w", err)
	}
	sess := newSession(&s.cfg, info, dev, c)
	// The slot is free again before the socket closes, so a frontend that
	// reconnects when it sees the close gets the same slot (and MAC).
	sess.released = func() { s.releaseSlot(path, info.Slot) }
	s.mu.Lock()
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	s.started.Add(1)

	// Shutdown closes the socket under the session's read.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	err = sess.serve()
	stop()
	if err != nil && ctx.Err() != nil {
		err = nil // the read failed because of the shutdown
		sess.errMu.Lock()
		sess.err = nil
		sess.errMu.Unlock()
	}

	s.mu.Lock()
	delete(s.sessions, sess)
	s.messages.Add(sess.messages.Load()) // under mu: Stats sums live sessions
	s.mu.Unlock()
	if err != nil {
		s.errors.Add(1)
		if errors.Is(err, virtio.ErrFault) {
			s.faults.Add(1)
		}
		sess.log.Warn("vhost-user session failed", "path", path, "messages", sess.messages.Load(), "err", err)
	} else {
		if ctx.Err() == nil {
			s.disconnects.Add(1)
		}
		sess.log.Info("vhost-user session ended", "path", path, "messages", sess.messages.Load())
	}
	if s.cfg.onEnd != nil {
		s.cfg.onEnd(info, err)
	}
	return err
}

// sleepCtx sleeps for d; it reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
