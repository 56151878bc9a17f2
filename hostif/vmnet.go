package hostif

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// VMNet modes (vmnet.h operating_modes_t, vmnet-helper --operation-mode).
const (
	VMNetShared  = "shared"  // VMNET_SHARED_MODE: NAT to the host's networks
	VMNetHost    = "host"    // VMNET_HOST_MODE: the host and other host-mode interfaces only
	VMNetBridged = "bridged" // VMNET_BRIDGED_MODE: bridged to a host interface
)

// VMNet defaults.
const (
	DefaultVMNetStartTimeout = 30 * time.Second
	DefaultVMNetRestartMin   = 250 * time.Millisecond
	DefaultVMNetRestartMax   = 30 * time.Second
	// vmnetStableRun is how long a helper must have run for the restart
	// backoff to start again from RestartMin.
	vmnetStableRun = time.Minute
)

// VMNetOptions configures OpenVMNet.
type VMNetOptions struct {
	// Helper is the vmnet-helper program (github.com/nirs/vmnet-helper)
	// or another that speaks its protocol. Default: DefaultVMNetHelper()
	// (macOS only).
	Helper string
	// Mode is VMNetShared (default), VMNetHost or VMNetBridged;
	// Interface is the host interface a bridged uplink joins.
	Mode, Interface string
	// InterfaceID is the vmnet interface UUID: the same ID gives the same
	// MAC, so the same DHCP lease, across helper restarts. Default: a
	// random one per OpenVMNet.
	InterfaceID string
	// Hostname is sent in DHCP option 12 (empty: none).
	Hostname string
	// StartTimeout bounds the helper's start (its description line) and
	// the first DHCP lease. Default DefaultVMNetStartTimeout.
	StartTimeout time.Duration
	// RestartMin and RestartMax bound the backoff between restarts of a
	// helper that exited. Defaults DefaultVMNetRestartMin/Max.
	RestartMin, RestartMax time.Duration
	// OnLease, if set, is called (from the lease goroutine) with every
	// lease after the first: renewed, or taken again after a restart.
	OnLease func(VMNetLease)
	// Logger receives the uplink's records (and the helper's stderr).
	// Default slog.Default().
	Logger *slog.Logger

	// dhcpRetry, if set, replaces the DHCP client's first
	// retransmission interval and minimum renewal wait (tests).
	dhcpRetry time.Duration
}

// VMNet is the vmnet uplink: frames to and from a vmnet interface through a
// vmnet-helper child process, one Ethernet frame per datagram on a unix
// datagram socketpair. vhost-arcnet is a DHCP client on that link
// (Lease) and the router NATs every guest behind the leased address.
type VMNet struct {
	opt   VMNetOptions
	log   *slog.Logger
	info  VMNetInfo // the first helper's description
	dhcp  *dhcpClient
	stats datapath.Stats

	link     atomic.Pointer[vmnetLink]
	peer     atomic.Pointer[datapath.Port]
	lease    atomic.Pointer[VMNetLease]
	relinked chan struct{} // a new helper runs: check the lease
	restarts atomic.Uint64
	// arpWait, while set, receives the ARP replies to the uplink's MAC
	// (resolveRouter); routerMAC is what it found.
	arpWait   atomic.Pointer[chan header.MAC]
	routerMAC header.MAC
	writeErr  atomic.Bool // a write error was logged

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex // started, closed
	started bool
	closed  bool
}

// vmnetLink is one helper process and our end of its socketpair.
type vmnetLink struct {
	proc *helperProc
	conn *net.UnixConn
	rc   syscall.RawConn
	max  int // the largest frame: vmnet_max_packet_size

	// Writer state, under wmu: the frame flattened into wbuf, and the
	// prebuilt callback of rc.Write (no allocation per frame).
	wmu     sync.Mutex
	wbuf    []byte
	wlen    int
	werr    error
	writeFn func(fd uintptr) bool

	// Reader state (the link's reader goroutine only).
	bufs   [][]byte
	lens   []int
	nread  int
	rerr   error
	readFn func(fd uintptr) bool
}

// OpenVMNet starts the helper, reads its description and takes a DHCP
// lease on the vmnet network, within opt.StartTimeout. Frames read before
// SetPeer are dropped; Start begins lease renewal and helper supervision.
func OpenVMNet(opt VMNetOptions) (_ *VMNet, err error) {
	switch opt.Mode {
	case "":
		opt.Mode = VMNetShared
	case VMNetShared, VMNetHost:
		if opt.Interface != "" {
			return nil, fmt.Errorf("vmnet: an interface (%q) is only for bridged mode", opt.Interface)
		}
	case VMNetBridged:
		if opt.Interface == "" {
			return nil, errors.New("vmnet: bridged mode needs a host interface (bridged:IFACE)")
		}
	default:
		return nil, fmt.Errorf("vmnet: mode %q: want shared, host or bridged:IFACE", opt.Mode)
	}
	if opt.Helper == "" {
		h, err := DefaultVMNetHelper()
		if err != nil {
			return nil, err
		}
		opt.Helper = h
	}
	if opt.InterfaceID == "" {
		opt.InterfaceID = newUUID()
	}
	if opt.StartTimeout <= 0 {
		opt.StartTimeout = DefaultVMNetStartTimeout
	}
	if opt.RestartMin <= 0 {
		opt.RestartMin = DefaultVMNetRestartMin
	}
	if opt.RestartMax < opt.RestartMin {
		opt.RestartMax = max(DefaultVMNetRestartMax, opt.RestartMin)
	}
	v := &VMNet{opt: opt, log: opt.Logger, relinked: make(chan struct{}, 1)}
	if v.log == nil {
		v.log = slog.Default()
	}
	v.ctx, v.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	deadline := time.Now().Add(opt.StartTimeout)
	ctx, cancel := context.WithDeadline(v.ctx, deadline)
	defer cancel()
	l, info, err := v.startLink(ctx)
	if err != nil {
		return nil, err
	}
	v.info = info
	v.dhcp = newDHCPClient(info.MAC, opt.Hostname, v.sendFrame, v.log)
	if opt.dhcpRetry > 0 {
		v.dhcp.retry, v.dhcp.renewMin = opt.dhcpRetry, opt.dhcpRetry
	}
	v.link.Store(l)
	v.wg.Add(1)
	go func() { defer v.wg.Done(); v.readLoop(l) }()
	lease, err := v.dhcp.acquire(ctx, netip.Addr{}, deadline)
	if err != nil {
		if l.proc.exited() {
			return nil, fmt.Errorf("vmnet: %w", l.proc.exitErr())
		}
		return nil, fmt.Errorf("vmnet: no address from vmnet's DHCP server within %v: %w", opt.StartTimeout, err)
	}
	if !lease.Router.IsValid() {
		return nil, fmt.Errorf("vmnet: the DHCP lease of %v has no router (option 3): nowhere to route to", lease.Addr)
	}
	v.lease.Store(&lease)
	v.routerMAC = v.resolveRouter(ctx, lease)
	v.log.Info("vmnet uplink up", "helper", opt.Helper, "mode", opt.Mode, "interface_id", opt.InterfaceID,
		"mac", info.MAC.String(), "mtu", info.MTU, "address", lease.Prefix.String(), "router", lease.Router,
		"dns", lease.DNS, "lease", lease.Duration, "router_mac", v.routerMAC.String())
	return v, nil
}

// resolveRouter asks for the router's MAC by ARP (RFC 826) a few times
// before the router takes over the link, so that the first routed packets
// are not dropped while the router resolves its next hop. It returns the
// zero MAC (the router then resolves it itself) if nobody answers.
func (v *VMNet) resolveRouter(ctx context.Context, l VMNetLease) header.MAC {
	ch := make(chan header.MAC, 1)
	v.arpWait.Store(&ch)
	defer v.arpWait.Store(nil)
	f := make([]byte, header.EthernetMinSize+header.ARPSize)
	header.Ethernet(f).Encode(&header.EthernetFields{Dst: header.BroadcastMAC, Src: v.info.MAC, EtherType: header.EtherTypeARP})
	header.ARP(f[header.EthernetMinSize:]).Encode(&header.ARPFields{Op: header.ARPRequest,
		SenderMAC: v.info.MAC, SenderIP: l.Addr, TargetIP: l.Router})
	for range 3 {
		if err := v.sendFrame(f); err != nil {
			break
		}
		select {
		case m := <-ch:
			return m
		case <-ctx.Done():
			return header.MAC{}
		case <-time.After(v.dhcp.retry):
		}
	}
	v.log.Warn("vmnet: the router did not answer ARP; the router resolves it later", "router", l.Router)
	return header.MAC{}
}

// arpReply hands ch the sender MAC of an ARP reply from the router to the
// uplink (the frame still goes on to the peer).
func (v *VMNet) arpReply(frame []byte, ch chan header.MAC) {
	if len(frame) < header.EthernetMinSize+header.ARPSize || binary.BigEndian.Uint16(frame[12:]) != header.EtherTypeARP {
		return
	}
	a := header.ARP(frame[header.EthernetMinSize:])
	l := v.lease.Load()
	if !a.IsValid() || a.Op() != header.ARPReply || l == nil || a.SenderIP() != l.Router ||
		a.SenderMAC().IsMulticast() || a.SenderMAC() == (header.MAC{}) {
		return
	}
	select {
	case ch <- a.SenderMAC():
	default:
	}
}

// RouterMAC returns the router's MAC found by ARP when the uplink opened,
// or the zero MAC.
func (v *VMNet) RouterMAC() header.MAC { return v.routerMAC }

// newUUID returns a random (version 4) UUID, RFC 9562 §5.4.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]))
}

// helperArgs are the helper's arguments: our end of the socketpair is its
// fd 3 (exec.Cmd.ExtraFiles[0]).
func (v *VMNet) helperArgs() []string {
	args := []string{"--fd=3", "--interface-id=" + v.opt.InterfaceID, "--operation-mode=" + v.opt.Mode}
	if v.opt.Mode == VMNetBridged {
		args = append(args, "--shared-interface="+v.opt.Interface)
	}
	return args
}

// startLink starts a helper and wraps our end of its socketpair.
func (v *VMNet) startLink(ctx context.Context) (*vmnetLink, VMNetInfo, error) {
	proc, f, info, err := startHelper(ctx, v.opt.Helper, v.helperArgs(), v.log)
	if err != nil {
		return nil, VMNetInfo{}, fmt.Errorf("vmnet: %w", err)
	}
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		proc.stop()
		return nil, VMNetInfo{}, fmt.Errorf("vmnet: socketpair: %w", err)
	}
	conn, ok := fc.(*net.UnixConn)
	if !ok {
		fc.Close()
		proc.stop()
		return nil, VMNetInfo{}, errors.New("vmnet: socketpair is not a unix socket")
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		proc.stop()
		return nil, VMNetInfo{}, fmt.Errorf("vmnet: socketpair: %w", err)
	}
	l := &vmnetLink{proc: proc, conn: conn, rc: rc, max: info.MaxPacketSize}
	if v.info.MAC != (header.MAC{}) {
		// Frames keep the first helper's MAC (the router's and the
		// lease's); a different one is logged.
		if info.MAC != v.info.MAC {
			v.log.Warn("vmnet: the restarted helper reports another MAC; keeping the first one",
				"first", v.info.MAC.String(), "now", info.MAC.String())
		}
		l.max = min(l.max, v.info.MaxPacketSize)
	}
	l.wbuf = make([]byte, l.max)
	l.writeFn = func(fd uintptr) bool {
		for {
			_, l.werr = unix.Write(int(fd), l.wbuf[:l.wlen])
			if l.werr != unix.EINTR {
				return true // EAGAIN included: a full socket drops, like a full TAP
			}
		}
	}
	l.bufs = make([][]byte, datapath.MaxBatch)
	l.lens = make([]int, datapath.MaxBatch)
	for i := range l.bufs {
		l.bufs[i] = make([]byte, l.max+1) // one more: an oversized datagram shows
	}
	l.readFn = func(fd uintptr) bool {
		for l.nread < len(l.bufs) {
			n, err := unix.Read(int(fd), l.bufs[l.nread])
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return l.nread > 0 // wait for more only if nothing came
			case err != nil:
				l.rerr = err
				return true
			}
			l.lens[l.nread] = n
			l.nread++
		}
		return true
	}
	setSocketBuffers(rc)
	return l, info, nil
}

// close ends the link: the helper is stopped (SIGTERM, then SIGKILL) and
// our end of the socketpair closed, which ends its reader.
func (l *vmnetLink) close() {
	l.proc.stop()
	l.conn.Close()
}

// MAC returns the uplink's MAC on the vmnet link (vmnet_mac_address).
func (v *VMNet) MAC() header.MAC { return v.info.MAC }

// MTU returns the vmnet interface's MTU.
func (v *VMNet) MTU() int { return v.info.MTU }

// Info returns the first helper's description of the interface.
func (v *VMNet) Info() VMNetInfo { return v.info }

// Lease returns the current DHCP lease.
func (v *VMNet) Lease() VMNetLease { return *v.lease.Load() }

// Restarts returns how many times the helper was restarted.
func (v *VMNet) Restarts() uint64 { return v.restarts.Load() }

// Name returns "vmnet".
func (v *VMNet) Name() string { return "vmnet" }

// Stats returns the uplink's counters: rx is read from vmnet, tx written.
func (v *VMNet) Stats() *datapath.Stats { return &v.stats }

// Offloads returns none: vmnet-helper runs without --enable-tso and
// --enable-checksum-offload, so frames go whole and with checksums.
func (v *VMNet) Offloads() datapath.RxOffloads { return datapath.RxOffloads{} }

// SetPeer sets where frames read from vmnet go (the router's uplink side);
// nil drops them.
func (v *VMNet) SetPeer(p datapath.Port) {
	if p == nil {
		v.peer.Store(nil)
		return
	}
	v.peer.Store(&p)
}

// Start begins lease renewal and the supervision of the helper (restarts
// with backoff when it exits). Start after Close, or twice, does nothing.
func (v *VMNet) Start() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started || v.closed {
		return
	}
	v.started = true
	v.wg.Add(2)
	go func() { defer v.wg.Done(); v.supervise() }()
	go func() { defer v.wg.Done(); v.leaseLoop() }()
}

// Close stops the helper and the goroutines and waits for them.
func (v *VMNet) Close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	v.mu.Unlock()
	v.cancel()
	if l := v.link.Swap(nil); l != nil {
		l.close()
	}
	v.wg.Wait()
	return nil
}

// sendFrame writes one frame the uplink makes itself (DHCP).
func (v *VMNet) sendFrame(frame []byte) error {
	l := v.link.Load()
	if l == nil {
		return errors.New("no helper running")
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if len(frame) > len(l.wbuf) {
		return fmt.Errorf("frame of %d bytes: vmnet takes %d", len(frame), len(l.wbuf))
	}
	l.wlen = copy(l.wbuf, frame)
	if err := l.rc.Write(l.writeFn); err != nil {
		return err
	}
	return l.werr
}

// Send writes frames to vmnet, one datagram each, under the link's write
// lock taken once per call. Partial checksums are completed on the copy
// written; GSO frames (the switch segments them first: Offloads is empty)
// and frames larger than vmnet's maximum packet size are dropped as
// malformed / too big; a full socket drops (no_buffer), like a full TAP
// queue.
func (v *VMNet) Send(frames []datapath.Frame) {
	if len(frames) == 0 {
		return
	}
	l := v.link.Load()
	if l == nil {
		v.stats.Drop(datapath.DropNoQueue, uint64(len(frames)))
		return
	}
	var sent, bytes, noBuf, tooBig, bad, gone uint64
	l.wmu.Lock()
	for i := range frames {
		f := &frames[i]
		if f.Hdr.GSOType != virtio.NetHdrGSONone {
			bad++ // the switch segments GSO frames for us (Offloads)
			continue
		}
		if f.Len > len(l.wbuf) || f.Len < header.EthernetMinSize {
			if f.Len < header.EthernetMinSize {
				bad++
			} else {
				tooBig++
			}
			continue
		}
		n := 0
		for _, s := range f.Segs {
			n += copy(l.wbuf[n:], s)
		}
		// vmnet-helper runs without checksum offload.
		if !datapath.CompleteChecksum(l.wbuf[:n], &f.Hdr) {
			bad++
			continue
		}
		l.wlen = n
		if err := l.rc.Write(l.writeFn); err != nil {
			gone++
			continue
		}
		switch l.werr {
		case nil:
			sent++
			bytes += uint64(n)
		case unix.EAGAIN, unix.ENOBUFS, unix.ENOMEM:
			noBuf++
		case unix.ECONNREFUSED, unix.EPIPE, unix.ENOTCONN:
			gone++ // the helper is gone; the supervisor restarts it
		default:
			bad++
			if !v.writeErr.Swap(true) {
				v.log.Warn("vmnet: a frame was refused (logged once)", "len", n, "err", l.werr)
			}
		}
	}
	l.wmu.Unlock()
	v.stats.TxPackets.Add(sent)
	v.stats.TxBytes.Add(bytes)
	v.stats.Drop(datapath.DropNoBuffer, noBuf)
	v.stats.Drop(datapath.DropTooBig, tooBig)
	v.stats.Drop(datapath.DropMalformed, bad)
	v.stats.Drop(datapath.DropNoQueue, gone)
}

// readLoop reads batches of frames from l until it is closed. DHCP replies
// for the client are taken off; the rest go to the peer in one call.
func (v *VMNet) readLoop(l *vmnetLink) {
	frames := make([]datapath.Frame, 0, datapath.MaxBatch)
	segs := make([][1][]byte, datapath.MaxBatch)
	// vmnet hands over the wire's frames: runs of one TCP connection's
	// segments go on as GSO frames (datapath.Coalescer).
	gro := new(datapath.Coalescer)
	for {
		l.nread, l.rerr = 0, nil
		if err := l.rc.Read(l.readFn); err != nil {
			return // closed
		}
		if l.nread == 0 && l.rerr != nil {
			if v.ctx.Err() == nil && !l.proc.exited() {
				v.log.Warn("vmnet: reading from the helper failed; waiting for it to be restarted", "err", l.rerr)
			}
			return // the supervisor replaces the link
		}
		frames = frames[:0]
		var bytes, tooBig, bad uint64
		for i := range l.nread {
			n := l.lens[i]
			b := l.bufs[i][:n]
			bytes += uint64(n)
			switch {
			case n > l.max:
				tooBig++
				continue
			case n < header.EthernetMinSize:
				bad++
				continue
			case isDHCPClientFrame(b):
				v.dhcp.handleFrame(b)
				continue
			}
			if w := v.arpWait.Load(); w != nil {
				v.arpReply(b, *w)
			}
			segs[i][0] = b
			frames = append(frames, datapath.Frame{Segs: segs[i][:], Len: n})
		}
		v.stats.RxPackets.Add(uint64(l.nread))
		v.stats.RxBytes.Add(bytes)
		v.stats.Drop(datapath.DropTooBig, tooBig)
		v.stats.Drop(datapath.DropMalformed, bad)
		if len(frames) == 0 {
			continue
		}
		if p := v.peer.Load(); p != nil {
			(*p).Send(gro.Coalesce(frames))
		} else {
			v.stats.Drop(datapath.DropNoRoute, uint64(len(frames)))
		}
	}
}

// supervise waits for the helper to exit and starts another, with a
// backoff from RestartMin doubling to RestartMax (back to RestartMin after
// a helper that ran vmnetStableRun). Frames sent meanwhile are dropped
// (no_queue). After a restart the lease goroutine checks the lease.
func (v *VMNet) supervise() {
	backoff := v.opt.RestartMin
	for {
		l := v.link.Load()
		if l == nil {
			return // closed
		}
		select {
		case <-v.ctx.Done():
			return
		case <-l.proc.done:
		}
		if !v.link.CompareAndSwap(l, nil) {
			return // Close took it
		}
		l.close()
		if time.Since(l.proc.started) >= vmnetStableRun {
			backoff = v.opt.RestartMin
		}
		v.log.Error("vmnet: the helper exited; restarting it", "err", l.proc.exitErr(), "in", backoff)
		for {
			select {
			case <-v.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, v.opt.RestartMax)
			ctx, cancel := context.WithTimeout(v.ctx, v.opt.StartTimeout)
			nl, _, err := v.startLink(ctx)
			cancel()
			if err != nil {
				if v.ctx.Err() != nil {
					return
				}
				v.log.Error("vmnet: restarting the helper failed", "err", err, "retry_in", backoff)
				continue
			}
			v.mu.Lock()
			if v.closed {
				v.mu.Unlock()
				nl.close()
				return
			}
			v.link.Store(nl)
			v.wg.Add(1)
			v.mu.Unlock()
			go func() { defer v.wg.Done(); v.readLoop(nl) }()
			v.restarts.Add(1)
			v.log.Info("vmnet: helper restarted", "restarts", v.restarts.Load())
			select {
			case v.relinked <- struct{}{}:
			default:
			}
			break
		}
	}
}

// leaseLoop renews the lease from T1 (RFC 2131 §4.4.5) and checks it again
// after a helper restart (INIT-REBOOT, §3.2). A lease lost is asked for
// again, for the same address, until the server answers. The NAT address
// was fixed from the first lease: a different address later is logged as
// an error (and given to OnLease).
func (v *VMNet) leaseLoop() {
	for {
		cur := v.Lease()
		t := time.NewTimer(time.Until(cur.Obtained.Add(cur.T1)))
		var next VMNetLease
		var err error
		relinked := false
		select {
		case <-v.ctx.Done():
			t.Stop()
			return
		case <-v.relinked:
			t.Stop()
			relinked = true
			next, err = v.reacquire(cur.Addr)
		case <-t.C:
			next, err = v.dhcp.renew(v.ctx, cur)
			if errors.Is(err, errLeaseLost) {
				v.log.Warn("vmnet: DHCP lease lost; asking for it again", "address", cur.Addr, "err", err)
				next, err = v.reacquire(cur.Addr)
			}
		}
		if err != nil {
			return // closed
		}
		if next.Addr != v.Lease().Addr {
			v.log.Error("vmnet: the DHCP server gave another address; the NAT keeps the first one: restart vhost-arcnet",
				"nat_address", v.Lease().Addr, "leased", next.Addr)
		}
		v.lease.Store(&next)
		v.log.Debug("vmnet: DHCP lease", "address", next.Addr, "lease", next.Duration)
		if relinked {
			// A new vmnet interface may sit behind a new bridge with
			// another MAC: ask the router again. Its reply reaches the
			// router too, which learns the next hop's MAC from any ARP
			// packet the next hop sends.
			v.resolveRouter(v.ctx, next)
		}
		if v.opt.OnLease != nil {
			v.opt.OnLease(next)
		}
	}
}

// reacquire asks for hint until a lease comes or the uplink closes.
func (v *VMNet) reacquire(hint netip.Addr) (VMNetLease, error) {
	for {
		l, err := v.dhcp.acquire(v.ctx, hint, time.Now().Add(v.opt.StartTimeout))
		if err == nil || v.ctx.Err() != nil {
			return l, err
		}
		v.log.Warn("vmnet: no DHCP lease yet; trying again", "err", err)
	}
}
