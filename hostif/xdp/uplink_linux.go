package xdp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/internal/blockpoll"
)

// Uplink is the XDP uplink on one host NIC: the XDP program attached to it
// and one AF_XDP socket per receive queue. It implements datapath.Port:
// Send transmits frames on the NIC, and the frames the program redirects
// go to the peer (SetPeer).
//
// Concurrency: one reader goroutine per socket (Start) hands each batch
// it takes from its RX ring to the peer; the frames are valid only during
// that Send. Send may be called from any goroutine: it takes the lock of
// the socket it transmits on once per batch. The next-hop watcher is one
// more goroutine. Close stops them all and waits for them.
type Uplink struct {
	log     *slog.Logger
	name    string
	ifindex int
	addr    netip.Addr
	mac     header.MAC
	mtu     int
	mode    Mode

	prog    *Program
	link    link.Link
	socks   []*socket
	reserve *portReservation
	hop     nextHop
	efd     int // an eventfd: readable once Close began

	stats    datapath.Stats
	peer     atomic.Pointer[datapath.Port]
	badRx    atomic.Bool // a bad RX descriptor was logged
	badTx    atomic.Bool // a frame refused by Send was logged
	nextHopF atomic.Pointer[func(netip.Addr, header.MAC)]

	mu      sync.Mutex // guards started and closed
	started bool
	closed  bool
	wg      sync.WaitGroup
}

// minKernel is the oldest kernel the uplink runs on: BPF links for XDP
// (5.9), AF_XDP need_wakeup (5.4), BPF_PROG_TEST_RUN for XDP.
var minKernel = [2]int{5, 10}

// Open checks the environment, reserves the port range, loads the XDP
// program, opens a socket per receive queue and attaches the program to
// the NIC. On error nothing is left behind. Every error is one line a user
// can act on.
func Open(opt Options) (u *Uplink, err error) {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	if opt.PortMin == 0 && opt.PortMax == 0 {
		opt.PortMin, opt.PortMax = DefaultPortMin, DefaultPortMax
	}
	if opt.PortMin == 0 || opt.PortMin > opt.PortMax {
		return nil, fmt.Errorf("xdp uplink: port range %d-%d: want 1 <= min <= max", opt.PortMin, opt.PortMax)
	}
	name := opt.Interface
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("xdp uplink on %s: needs root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW)", name)
	}
	if err := checkKernel(); err != nil {
		return nil, err
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("xdp uplink: interface %s does not exist", name)
		}
		return nil, fmt.Errorf("xdp uplink: interface %q: %w", name, err)
	}
	a := l.Attrs()
	if a.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("xdp uplink: interface %s is down (ip link set %s up)", name, name)
	}
	if a.Xdp != nil && a.Xdp.Attached {
		return nil, fmt.Errorf("xdp uplink: interface %s already has an XDP program (id %d): detach it first (ip link set %s xdp off)",
			name, a.Xdp.ProgId, name)
	}
	if len(a.HardwareAddr) != 6 {
		return nil, fmt.Errorf("xdp uplink: interface %s has no Ethernet address", name)
	}
	if a.MTU+header.EthernetMinSize > MaxFrameLen {
		return nil, fmt.Errorf("xdp uplink: interface %s has MTU %d: AF_XDP frames take at most %d (MTU %d)",
			name, a.MTU, MaxFrameLen, MaxFrameLen-header.EthernetMinSize)
	}
	addr, err := ifaceAddr(l)
	if err != nil {
		return nil, err
	}
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("xdp uplink: netlink: %w", err)
	}
	gw, err := defaultGateway(nl, a.Index)
	if err != nil {
		nl.Close()
		return nil, fmt.Errorf("xdp uplink: interface %s: %w through it: the NAT's traffic needs a gateway", name, err)
	}
	// NumRxQueues is what the device allocated; sockets are bound to
	// queues from 0 until the kernel says one is not active.
	queues := max(1, min(a.NumRxQueues, maxQueues))
	u = &Uplink{log: log, name: name, ifindex: a.Index, addr: addr, mac: header.MAC(a.HardwareAddr), mtu: a.MTU, efd: -1}
	u.hop = nextHop{ifindex: a.Index, nl: nl, log: log, ask: make(chan struct{}, 1), done: make(chan struct{}), gw: gw,
		set: func(a netip.Addr, m header.MAC) {
			if f := u.nextHopF.Load(); f != nil {
				(*f)(a, m)
			}
		}}
	defer func() {
		if err != nil {
			u.release()
		}
	}()
	if u.efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("xdp uplink: eventfd: %w", err)
	}
	if u.reserve, err = reservePorts(opt.PortMin, opt.PortMax, name); err != nil {
		return nil, fmt.Errorf("xdp uplink: reserving ports %d-%d: %w", opt.PortMin, opt.PortMax, err)
	}
	if u.prog, err = LoadProgram(ProgramOptions{Addr: addr, PortMin: opt.PortMin, PortMax: opt.PortMax, Queues: queues}); err != nil {
		return nil, fmt.Errorf("xdp uplink on %s: %w", name, err)
	}
	rxSize := rxRingFor(queues)
	for q := range queues {
		s, err := openSocket(a.Index, q, rxSize)
		var be *bindError
		if q > 0 && errors.As(err, &be) && errors.Is(err, unix.EINVAL) {
			break // no queue q: the device has q active receive queues
		}
		if err != nil {
			return nil, fmt.Errorf("xdp uplink on %s: queue %d: %w", name, q, err)
		}
		u.socks = append(u.socks, s)
		if err := u.prog.SetSocket(q, s.fd); err != nil {
			return nil, err
		}
	}
	if u.link, u.mode, err = u.prog.Attach(a.Index); err != nil {
		return nil, fmt.Errorf("xdp uplink on %s: %w", name, err)
	}
	u.hop.subscribe()
	if u.mode == ModeGeneric {
		log.Warn("xdp uplink: the driver has no native XDP: generic mode (slower)", "interface", name)
	}
	return u, nil
}

// checkKernel refuses kernels older than minKernel.
func checkKernel() error {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("xdp uplink: uname: %w", err)
	}
	rel := unix.ByteSliceToString(uts.Release[:])
	var v [2]int
	parts := strings.SplitN(rel, ".", 3)
	for i := range min(2, len(parts)) {
		n := strings.IndexFunc(parts[i], func(r rune) bool { return r < '0' || r > '9' })
		if n < 0 {
			n = len(parts[i])
		}
		v[i], _ = strconv.Atoi(parts[i][:n])
	}
	if v[0] < minKernel[0] || (v[0] == minKernel[0] && v[1] < minKernel[1]) {
		return fmt.Errorf("xdp uplink: kernel %s is too old: Linux %d.%d or later needed: %w", rel, minKernel[0], minKernel[1], errors.ErrUnsupported)
	}
	return nil
}

// ifaceAddr returns the NIC's primary IPv4 address.
func ifaceAddr(l netlink.Link) (netip.Addr, error) {
	name := l.Attrs().Name
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("xdp uplink: addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if a.Flags&unix.IFA_F_SECONDARY != 0 {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && a.IP.To4() != nil {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("xdp uplink: interface %s has no IPv4 address: the NAT uses the NIC's own", name)
}

// Name returns the NIC's name.
func (u *Uplink) Name() string { return u.name }

// Stats returns the uplink's counters: Rx counts frames taken from the RX
// rings, Tx frames put on the TX rings.
func (u *Uplink) Stats() *datapath.Stats { return &u.stats }

// NATAddr returns the NIC's IPv4 address, the NAT's external address.
func (u *Uplink) NATAddr() netip.Addr { return u.addr }

// MAC returns the NIC's MAC address: the router's on the uplink.
func (u *Uplink) MAC() header.MAC { return u.mac }

// MTU returns the NIC's MTU.
func (u *Uplink) MTU() int { return u.mtu }

// Mode returns how the program is attached.
func (u *Uplink) Mode() Mode { return u.mode }

// Queues returns the number of sockets (receive queues).
func (u *Uplink) Queues() int { return len(u.socks) }

// ZeroCopy reports whether every socket is bound in zero-copy mode.
func (u *Uplink) ZeroCopy() bool {
	for _, s := range u.socks {
		if !s.zeroCopy {
			return false
		}
	}
	return len(u.socks) > 0
}

// NextHop returns the gateway Open found, and its MAC if the kernel's
// neighbour table has a usable one now.
func (u *Uplink) NextHop() (netip.Addr, header.MAC) {
	mac, _, _ := neighbourMAC(u.hop.nl, u.ifindex, u.hop.gw)
	return u.hop.gw, mac
}

// Offloads returns what Send takes: partial checksums (completed in
// software while the frame is copied into the UMEM), no GSO: the switch
// segments those before they reach the router.
func (u *Uplink) Offloads() datapath.RxOffloads { return datapath.RxOffloads{Csum: true} }

// SetPeer sets where received frames go; nil drops them.
func (u *Uplink) SetPeer(p datapath.Port) {
	if p == nil {
		u.peer.Store(nil)
		return
	}
	u.peer.Store(&p)
}

// ResolveNextHop asks the kernel to resolve the next hop's MAC (for
// router.Options.ResolveNextHop); it never blocks.
func (u *Uplink) ResolveNextHop() { u.hop.Resolve() }

// Start starts the readers and the next-hop watcher, which calls
// setNextHop (router.SetNextHop) each time the gateway or its MAC changes.
// Start after Close, or a second time, does nothing.
func (u *Uplink) Start(setNextHop func(netip.Addr, header.MAC)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.started || u.closed {
		return
	}
	u.started = true
	if setNextHop != nil {
		u.nextHopF.Store(&setNextHop)
	}
	u.wg.Go(u.hop.run)
	for _, s := range u.socks {
		u.wg.Go(func() { u.readLoop(s) })
	}
}

// Send transmits frames on the socket of their queue (Queue modulo the
// socket count), copying each into a UMEM chunk. Frames without room on
// the TX ring are dropped and counted.
func (u *Uplink) Send(frames []datapath.Frame) {
	if len(frames) == 0 {
		return
	}
	s := u.socks[int(frames[0].Queue)%len(u.socks)]
	c := s.send(frames)
	u.stats.TxPackets.Add(c.sent)
	u.stats.TxBytes.Add(c.bytes)
	u.stats.Drop(datapath.DropNoBuffer, c.noBuf)
	if c.bad > 0 {
		u.stats.Drop(datapath.DropMalformed, c.bad)
		if !u.badTx.Swap(true) {
			u.log.Warn("xdp uplink: frame refused (GSO, too large or a bad checksum range; logged once)", "interface", u.name)
		}
	}
}

// readLoop hands the frames of s's RX ring to the peer, batch by batch,
// until Close.
func (u *Uplink) readLoop(s *socket) {
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}, {Fd: int32(u.efd), Events: unix.POLLIN}}
	for {
		taken, good := s.receive()
		if taken == 0 {
			fds[0].Revents, fds[1].Revents = 0, 0
			if _, err := blockpoll.Poll(fds); err != nil && err != unix.EINTR {
				u.log.Error("xdp uplink: poll failed: the queue stops", "queue", s.queue, "err", err)
				return
			}
			if fds[1].Revents != 0 {
				return
			}
			continue
		}
		u.deliver(s, taken, good)
		s.refill(taken)
	}
}

// deliver hands the good frames of a batch to the peer.
func (u *Uplink) deliver(s *socket, taken, good int) {
	var bytes uint64
	for i := range good {
		bytes += uint64(s.frames[i].Len)
	}
	u.stats.RxPackets.Add(uint64(good))
	u.stats.RxBytes.Add(bytes)
	if bad := taken - good; bad > 0 {
		u.stats.Drop(datapath.DropMalformed, uint64(bad))
		if !u.badRx.Swap(true) {
			u.log.Warn("xdp uplink: bad RX descriptor from the kernel dropped (logged once)", "queue", s.queue)
		}
	}
	if good == 0 {
		return
	}
	p := u.peer.Load()
	if p == nil {
		u.stats.Drop(datapath.DropNoRoute, uint64(good))
		return
	}
	(*p).Send(s.gro.Coalesce(s.frames[:good]))
}

// Close detaches the program, stops the readers and the watcher, closes
// the sockets and restores the reserved ports. Frames sent after Close are
// dropped. Close is idempotent.
func (u *Uplink) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	started := u.started
	u.mu.Unlock()
	close(u.hop.done)
	if !started && u.hop.stop != nil {
		close(u.hop.stop)
	}
	return u.release()
}

// release undoes Open, in reverse: detach first, so no frame is redirected
// to a socket that is going away.
func (u *Uplink) release() error {
	var errs []error
	if u.link != nil {
		if err := u.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detaching the XDP program from %s: %w", u.name, err))
		}
	}
	if u.efd >= 0 {
		unix.Write(u.efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
	u.wg.Wait()
	for _, s := range u.socks {
		s.txMu.Lock()
		s.closed = true
		s.txMu.Unlock()
		if err := s.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if u.prog != nil {
		errs = append(errs, u.prog.Close())
	}
	if u.efd >= 0 {
		unix.Close(u.efd)
		u.efd = -1
	}
	u.hop.nl.Close()
	if u.reserve != nil {
		if err := u.reserve.release(); err != nil {
			errs = append(errs, fmt.Errorf("restoring the reserved ports: %w", err))
		}
	}
	return errors.Join(errs...)
}

// SocketStats are the kernel's counters of the uplink's AF_XDP sockets
// (XDP_STATISTICS), summed over the queues.
type SocketStats struct {
	// RxDropped counts frames the kernel dropped on receive for other
	// reasons than the two below (too long for a chunk, among others).
	RxDropped uint64
	// RxInvalid and TxInvalid count descriptors the kernel found invalid.
	RxInvalid, TxInvalid uint64
	// RxRingFull counts frames dropped because the RX ring was full,
	// FillRingEmpty those dropped for want of a fill ring entry, and
	// TxRingEmpty the times the kernel found the TX ring empty.
	RxRingFull, FillRingEmpty, TxRingEmpty uint64
}

// SocketStats returns the kernel's counters of the sockets.
func (u *Uplink) SocketStats() (SocketStats, error) {
	var t SocketStats
	for _, s := range u.socks {
		st, err := s.stats()
		if err != nil {
			return t, fmt.Errorf("XDP_STATISTICS of queue %d: %w", s.queue, err)
		}
		t.RxDropped += st.Rx_dropped
		t.RxInvalid += st.Rx_invalid_descs
		t.TxInvalid += st.Tx_invalid_descs
		t.RxRingFull += st.Rx_ring_full
		t.FillRingEmpty += st.Rx_fill_ring_empty_descs
		t.TxRingEmpty += st.Tx_ring_empty_descs
	}
	return t, nil
}
