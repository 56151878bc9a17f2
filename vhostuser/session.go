package vhostuser

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// Device is the virtio-net device behind a session: it works the queues the
// session starts. datapath.GuestPort implements it. The session calls every
// method from its own goroutine, one call at a time.
type Device interface {
	// StartQueue hands queue idx (2k: receiveq k, 2k+1: transmitq k,
	// virtio 1.2 §5.1.2) to the device: the ring is started and enabled
	// (vhost-user spec "Ring states"). kick wakes the device when the
	// driver adds buffers; call notifies the driver. q, kick and call stay
	// valid until StopQueue(idx) returns.
	StartQueue(idx int, q *virtio.Queue, kick virtio.Doorbell, call virtio.Notifier)
	// StopQueue returns only when the device no longer touches queue idx
	// (its rings, its kick and call, the guest memory it points into). By
	// then every chain it popped is pushed and published, or given back
	// with Unpop, so the avail index GET_VRING_BASE reports (and a queue
	// rebuilt on new memory resumes from) is exact.
	//
	// A device pushes the chains of a queue in the order it popped them
	// (DefaultFeatures offers VIRTIO_F_IN_ORDER: "a device MUST use
	// buffers in the same order in which they have been available",
	// virtio 1.2 §6.2).
	StopQueue(idx int)
	// SetLog sets the dirty log for writes the device makes to guest memory
	// outside its queues; nil turns logging off. The session sets the log
	// of every queue itself (virtio.Queue.SetLog). Once SetLog returns the
	// device no longer writes to the previous log, whose mapping may go.
	SetLog(l *virtio.DirtyLog)
	// Close ends the session's use of the device. It is called once, after
	// StopQueue of every queue the device still had.
	Close()
}

// MTUSetter is an optional Device interface: NET_SET_MTU calls SetMTU with
// the MTU the frontend exposes to the guest (68..Options.MTU).
type MTUSetter interface {
	SetMTU(mtu uint16)
}

// MACSetter is an optional Device interface: SET_CONFIG calls SetMAC when
// the frontend changes the mac field of the virtio-net config space (a
// legacy driver setting its address, or the destination of a migration
// restoring the source's); SessionInfo.MAC is the address before any such
// change. See Session.setConfig for what may change it.
type MACSetter interface {
	SetMAC(mac [6]byte)
}

// RARPSender is an optional Device interface: SEND_RARP (after a live
// migration, for guests without VIRTIO_NET_F_GUEST_ANNOUNCE) calls SendRARP
// with the guest's MAC address so the device can broadcast a RARP for it.
type RARPSender interface {
	SendRARP(mac [6]byte)
}

// Role says which side of the unix socket connected.
type Role int

const (
	// RoleServer: the backend listened and the frontend connected.
	RoleServer Role = iota
	// RoleClient: the backend connected to the frontend's socket.
	RoleClient
)

func (r Role) String() string {
	if r == RoleClient {
		return "client"
	}
	return "server"
}

// SessionInfo describes one connection; Options.NewDevice gets it.
type SessionInfo struct {
	ID   uint64 // unique per Server, counting from 1
	Role Role
	Path string // the socket path ("" for ServeConn)
	// Slot is the connection's slot on its socket: the lowest number no
	// other live session of the same socket holds. The first guest port of
	// a socket is slot 0, a second one connected while the first is up is
	// slot 1, and a port that reconnects after its session ended gets its
	// slot back (a client-role socket only ever has slot 0).
	Slot int
	// MAC is the guest port's MAC address: the mac field of its virtio-net
	// config space (virtio 1.2 §5.1.4, VIRTIO_NET_F_MAC), from
	// Options.MACs, else GenerateMAC(Path, Slot). The switch and the DHCP
	// server use it. Frontends that keep their own config space (QEMU)
	// show the guest the MAC given on their command line instead.
	MAC [6]byte
}

// SessionStats are one session's counters.
type SessionStats struct {
	Messages uint64 // requests handled successfully
}

// Session is one frontend connection: the protocol state machine, the
// guest memory it mapped, and the rings of its Device. Only the session's
// goroutine touches its state; Stats and Err are safe from anywhere.
type Session struct {
	cfg  *config
	info SessionInfo
	dev  Device
	log  *slog.Logger
	conn transport

	// Negotiation.
	features      uint64 // acked with SET_FEATURES
	featuresAcked bool
	proto         uint64 // acked with SET_PROTOCOL_FEATURES
	owner         bool
	status        uint8
	mtu           uint16
	mac           [6]byte // config space mac: SessionInfo.MAC until SET_CONFIG changes it

	// Guest memory: the mapped regions, and the Memory built from them
	// (nil until the first region).
	regions []*mappedRegion
	mem     *virtio.Memory

	// Dirty log: the area of SET_LOG_BASE, whether VHOST_F_LOG_ALL is on,
	// and the SET_LOG_FD eventfd (kept, unused: -1 when none).
	logArea *mappedLog
	logOn   bool
	logFD   int

	rings []ring
	// ringErr are the rings' error fds (SET_VRING_ERR), signalled when a
	// ring breaks, from the goroutine that found it broken. Allocated once:
	// the notifiers are safe from anywhere.
	ringErr []notifier

	// The session's share of the server's memory budget (memtable.go
	// checkTotal, settle), and mappings on their way out of the table,
	// which teardown unmaps if a fault interrupted their removal.
	reserved    uint64
	retiring    []*mappedRegion
	retiringLog *mappedLog

	// A fault in the session's guest memory (or log): the first one, and
	// the handler given to every mapping (memFault, bound once).
	faulted atomic.Pointer[virtio.Fault]
	onFault func(*virtio.Fault)
	// A notification that waited on a frontend's full, blocking eventfd
	// (the call watchdog's finding, notifyBlocked): the session's error.
	blocked atomic.Pointer[error]

	// released, if set, is called by teardown once the device is closed
	// and before the socket is (the Server frees the connection slot).
	released func()

	messages atomic.Uint64
	errMu    sync.Mutex
	err      error

	// Per-message scratch, reused.
	hdr  [headerSize]byte
	body [maxPayload]byte
	oob  []byte
	fds  fdSet
	p    payload
	out  [headerSize + maxPayload]byte
}

func newSession(cfg *config, info SessionInfo, dev Device, conn transport) *Session {
	s := &Session{
		cfg:     cfg,
		info:    info,
		dev:     dev,
		conn:    conn,
		log:     cfg.log.With("session", info.ID, "role", info.Role.String()),
		logFD:   -1,
		mac:     info.MAC,
		rings:   make([]ring, 2*cfg.queuePairs),
		ringErr: make([]notifier, 2*cfg.queuePairs),
		oob:     make([]byte, oobSize),
	}
	s.onFault = s.memFault
	for i := range s.rings {
		s.rings[i].init()
	}
	return s
}

// Info returns the session's description.
func (s *Session) Info() SessionInfo { return s.info }

// Stats returns the session's counters.
func (s *Session) Stats() SessionStats { return SessionStats{Messages: s.messages.Load()} }

// Err returns the error that ended the session: nil while it runs or after
// a clean disconnect.
func (s *Session) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// serve reads and dispatches messages until the frontend disconnects or
// breaks the protocol, then releases everything. It returns nil for a
// clean disconnect.
func (s *Session) serve() error {
	s.log.Debug("vhost-user session started")
	// The session's goroutine reads guest memory too (a ring's used index
	// when it starts): a fault there ends the session (handleGuarded).
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	err := s.loop()
	s.teardown()
	if errors.Is(err, errCleanEOF) || isDisconnect(err) {
		err = nil
	}
	if f := s.faulted.Load(); f != nil {
		err = fmt.Errorf("%w: %w", ErrBadMemory, f)
	} else if b := s.blocked.Load(); b != nil {
		err = *b
	}
	s.errMu.Lock()
	s.err = err
	s.errMu.Unlock()
	return err
}

func (s *Session) loop() error {
	for {
		if err := readFull(s.conn, s.hdr[:], s.oob, &s.fds, true); err != nil {
			s.fds.closeRest()
			return err
		}
		err := s.handleGuarded()
		s.fds.closeRest()
		if err != nil {
			return err
		}
		s.messages.Add(1)
	}
}

// handleGuarded is handleMessage with a fault in guest memory (the file
// behind it shrank) turned into the session's error.
func (s *Session) handleGuarded() (err error) {
	defer func() {
		if f := virtio.HandleFault(recover()); f != nil {
			s.memFault(f) // told already by HandleFault, unless another mapping faulted first
			err = fmt.Errorf("%w: %w", ErrBadMemory, f)
		}
	}()
	return s.handleMessage()
}

// memFault is told of a fault in the session's guest memory or log, by
// whichever goroutine hit it (a device worker, another guest's worker
// delivering a frame, the session's own): the frontend shrank the file
// behind it. The first one counts; every ring's error fd is signalled (every ring lives in that memory) and the session is made to
// end: its read of the socket returns, teardown stops the device's queues
// and unmaps the memory, and serve returns the fault. It does not block.
func (s *Session) memFault(f *virtio.Fault) {
	if !s.faulted.CompareAndSwap(nil, f) {
		return
	}
	// One line says it all when the session ends ("vhost-user session
	// failed", with the fault as its error).
	s.log.Debug("guest memory fault; ending the session", "addr", fmt.Sprintf("%#x", f.Addr))
	for i := range s.ringErr {
		_ = s.ringErr[i].Notify()
	}
	s.endSoon()
}

// endSoon makes the session end: its read of the socket returns, and
// serve tears it down. It does not block.
func (s *Session) endSoon() {
	if c, ok := s.conn.(interface{ CloseRead() error }); ok {
		_ = c.CloseRead()
	} else {
		_ = s.conn.Close()
	}
}

// notifyBlocked returns what the call watchdog (callwatch.go) tells when a
// notification to ring i's call or error fd (what) waited on a full
// eventfd the frontend had made blocking: only a hostile frontend does
// that (the backend adds 1 at a time; the counter's maximum is 2^64-2),
// and the notifying worker may be another guest's. The session ends with
// it as its error, as after a memory fault. It does not block.
func (s *Session) notifyBlocked(i int, what string) func() {
	return func() {
		err := fmt.Errorf("%w: ring %d's %s fd: the frontend filled its eventfd counter and cleared O_NONBLOCK, and a notification waited; ending the session",
			ErrBadFDs, i, what)
		if s.blocked.CompareAndSwap(nil, &err) {
			s.endSoon()
		}
	}
}

// handleMessage runs the dispatcher steps on the message whose header is
// in s.hdr: header check, payload read, table lookup, fd count, exact
// size, decode, handler, reply or ack.
func (s *Session) handleMessage() error {
	h, err := decodeHeader(s.hdr[:])
	if err != nil {
		return err
	}
	body := s.body[:h.Size]
	if err := readFull(s.conn, body, s.oob, &s.fds, false); err != nil {
		return fmt.Errorf("%v payload: %w", h.Request, err)
	}
	return s.dispatch(h, body)
}

// dispatch runs one decoded message through its table row. On failure, a
// frontend that asked for an ack (REPLY_ACK) still gets a non-zero one
// before the session ends, so it sees which request failed. A request the
// handler refused (reject) gets the non-zero ack too, but the session goes
// on.
func (s *Session) dispatch(h header, body []byte) error {
	e := lookup(h.Request)
	reply, err := s.run(e, h, body)
	refused := isRejection(err)
	if refused {
		s.log.Warn("vhost-user request refused", "err", err)
	}
	if e != nil && e.reply {
		if err == nil {
			err = s.writeReply(h.Request, reply)
		}
		return err
	}
	if h.needReply() && s.proto&ProtocolFReplyAck != 0 {
		var status uint64
		if err != nil {
			status = 1
		}
		if werr := s.writeReply(h.Request, s.replyU64(status)); werr != nil && (err == nil || refused) {
			return werr
		}
	}
	if refused {
		return nil
	}
	return err
}

// rejection is the error of a well-formed request that the backend
// declines without ending the session: a SET_CONFIG that writes a
// read-only field, say. The frontend gets a non-zero ack if it asked for
// one (spec "REPLY_ACK": "non-zero to indicate an error").
type rejection struct{ err error }

func (r rejection) Error() string { return r.err.Error() }
func (r rejection) Unwrap() error { return r.err }

// reject marks err as a refusal that keeps the session.
func reject(err error) error { return rejection{err} }

// isRejection reports whether err is (or wraps) a rejection. (A walk
// rather than errors.As: no allocation on the dispatcher's path.)
func isRejection(err error) bool {
	for err != nil {
		if _, ok := err.(rejection); ok {
			return true
		}
		err = errors.Unwrap(err)
	}
	return false
}

func (s *Session) run(e *entry, h header, body []byte) ([]byte, error) {
	if e == nil {
		return nil, fmt.Errorf("%w: %v", ErrUnknownRequest, h.Request)
	}
	if n := s.fds.len(); n < e.minFDs || n > e.maxFDs {
		return nil, fmt.Errorf("%s: %w: %d fds, want %d..%d", e.name, ErrBadFDs, n, e.minFDs, e.maxFDs)
	}
	if err := e.kind.checkSize(len(body)); err != nil {
		return nil, fmt.Errorf("%s: %w", e.name, err)
	}
	if e.proto != 0 && s.proto&e.proto == 0 {
		return nil, fmt.Errorf("%s: %w: needs protocol feature %s", e.name, ErrNotNegotiated, protocolFeatureString(e.proto))
	}
	if err := e.kind.decode(body, &s.p); err != nil {
		return nil, fmt.Errorf("%s: %w", e.name, err)
	}
	reply, err := e.handle(s, &s.p, &s.fds)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.name, err)
	}
	return reply, nil
}

// replyU64 puts v in the reply buffer and returns it as a reply payload.
func (s *Session) replyU64(v uint64) []byte {
	b := s.out[headerSize : headerSize+sizeU64]
	ne.PutUint64(b, v)
	return b
}

// replyBody returns the reply buffer's payload area.
func (s *Session) replyBody() []byte { return s.out[headerSize:] }

// writeReply sends a reply to r whose payload is p (a slice of the reply
// buffer, or empty).
func (s *Session) writeReply(r Request, p []byte) error {
	n := copy(s.out[headerSize:], p)
	putReplyHeader(s.out[:], r, n)
	if _, err := s.conn.Write(s.out[:headerSize+n]); err != nil {
		return fmt.Errorf("reply to %v: %w", r, err)
	}
	return nil
}

// teardown stops every queue, closes the device, and releases every fd
// and mapping of the session.
func (s *Session) teardown() {
	for i := range s.rings {
		s.stopRing(i)
	}
	if s.dev != nil {
		s.dev.Close()
	}
	for i := range s.rings {
		s.rings[i].release()
		s.ringErr[i].set(nil)
	}
	unmapAll(s.regions)
	unmapAll(s.retiring)
	s.regions, s.mem, s.retiring = nil, nil, nil
	s.settle()
	for _, l := range []*mappedLog{s.logArea, s.retiringLog} {
		if l != nil {
			l.unmap()
		}
	}
	s.logArea, s.retiringLog = nil, nil
	closeFD(&s.logFD)
	if s.released != nil {
		s.released()
	}
	_ = s.conn.Close()
}
