package services

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// DNS port (RFC 1035 §4.2).
const dnsPort = 53

// Gateway is the gateway's own host on the guest subnet: it answers ARP for
// the gateway address, ICMP echo, DHCPv4 and DNS (UDP and TCP). It is a
// frame-in, frame-out component: the switch passes it the Ethernet frames
// addressed to the gateway's MAC or broadcast, and it replies through a
// function the switch supplies.
type Gateway struct {
	s     *settings
	stats Stats
	db    *leaseDB
	dhcp  *dhcpServer
	fwd   *forwarder
	dns   *dnsServer
	tcp   *tcpDNS
	lw    *leaseWriter

	ipID      atomic.Uint32
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// NewGateway validates cfg, loads the lease file (if any) and starts the
// gateway's background work (lease file writer, TCP retransmission timer).
// Close stops it.
func NewGateway(cfg Config) (*Gateway, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	g := &Gateway{s: s}
	g.db = newLeaseDB(s)
	if s.leaseFile != "" {
		skipped, err := g.db.load(s.leaseFile)
		if err != nil {
			return nil, err
		}
		g.lw = newLeaseWriter(s.leaseFile, g.db, &g.stats, s.log)
		// Write once now: it proves the file is writable before any guest
		// depends on it, and drops records the configuration rejected.
		if err := g.lw.flush(); err != nil {
			return nil, err
		}
		s.log.Info("dhcp leases loaded", "file", s.leaseFile, "leases", len(g.db.byIP), "skipped", skipped)
		g.db.changed = g.lw.kick
		g.lw.start()
	}
	g.dhcp = newDHCPServer(s, g.db, &g.stats)
	g.fwd = newForwarder(s, &g.stats)
	g.dns = newDNSServer(s, g.db, &g.stats, g.fwd)
	g.tcp = newTCPDNS(g)
	g.tcp.start()
	return g, nil
}

// Addr returns the gateway's IPv4 address.
func (g *Gateway) Addr() netip.Addr { return g.s.gw }

// MAC returns the gateway's MAC address.
func (g *Gateway) MAC() net.HardwareAddr { return net.HardwareAddr(slices.Clone(g.s.mac[:])) }

// Subnet returns the guest subnet.
func (g *Gateway) Subnet() netip.Prefix { return g.s.subnet }

// Domain returns the guests' DNS domain, lower case, without the trailing
// dot.
func (g *Gateway) Domain() string { return strings.TrimSuffix(g.s.domain, ".") }

// Stats returns the gateway's counters.
func (g *Gateway) Stats() *Stats { return &g.stats }

// SetHostAddr sets the address served as host.<domain> (invalid: the name
// does not exist), e.g. once an uplink is up.
func (g *Gateway) SetHostAddr(a netip.Addr) error {
	if a.IsValid() && !a.Is4() {
		return fmt.Errorf("host address %s: want IPv4", a)
	}
	g.dns.setHostAddr(a)
	return nil
}

// Leases returns a copy of the lease database, sorted by address.
func (g *Gateway) Leases() []Lease { return g.db.leases() }

// LookupMAC returns the IPv4 address currently leased to mac (a bound,
// unexpired lease), for the switch's anti-spoofing.
func (g *Gateway) LookupMAC(mac net.HardwareAddr) (netip.Addr, bool) {
	if len(mac) != 6 {
		return netip.Addr{}, false
	}
	return g.db.lookupMAC([6]byte(mac), g.s.clock())
}

// LookupIP returns the MAC address that a is currently leased to.
func (g *Gateway) LookupIP(a netip.Addr) (net.HardwareAddr, bool) {
	m, ok := g.db.lookupIP(a, g.s.clock())
	if !ok {
		return nil, false
	}
	return net.HardwareAddr(m[:]), true
}

// LeaseGeneration returns a number that changes whenever an address is
// bound to a different MAC, released or declined: a switch that caches
// LookupMAC answers per port asks again when it moves. (A lease that merely
// expires does not move it; its address is handed to another MAC only
// through a change that does.)
func (g *Gateway) LeaseGeneration() uint64 { return g.db.gen.Load() }

// Close stops the gateway: upstream DNS exchanges in flight are abandoned
// (their replies never sent), TCP connections are dropped, and the lease
// database is written a last time. HandleFrame after Close drops every
// frame. Close is idempotent.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		g.closed.Store(true)
		g.tcp.stop()
		g.fwd.close()
		if g.lw != nil {
			g.closeErr = g.lw.stop()
		}
	})
	return g.closeErr
}

// HandleFrame processes one Ethernet frame sent to the gateway's MAC or
// broadcast. Replies go to reply, synchronously (ARP, ICMP, DHCP, local
// and cached DNS) or later from another goroutine (forwarded DNS, TCP
// retransmissions), so reply must be safe for concurrent use and may be
// called after HandleFrame returns, until Close. The frame passed to reply
// is valid only during that call.
//
// frame must not change during the call: the switch passes a private copy
// (ARCHITECTURE.md "Rules that hold everywhere"), not guest memory. HandleFrame is safe for concurrent
// use and never panics on any frame.
func (g *Gateway) HandleFrame(frame []byte, reply func(frame []byte)) {
	g.stats.inc(FramesIn)
	if g.closed.Load() {
		g.stats.drop(DropClosed)
		return
	}
	eth := header.Ethernet(frame)
	if !eth.IsValid() || eth.Src().IsMulticast() {
		g.stats.drop(DropMalformed)
		return
	}
	if eth.HasVLAN() {
		g.stats.drop(DropUnsupported)
		return
	}
	if dst := eth.Dst(); dst != g.s.mac {
		if !dst.IsBroadcast() {
			if dst.IsMulticast() {
				g.stats.drop(DropUnsupported)
			} else {
				g.stats.drop(DropNotLocal)
			}
			return
		}
	}
	switch eth.EtherType() {
	case header.EtherTypeARP:
		g.handleARP(eth, reply)
	case header.EtherTypeIPv4:
		g.handleIPv4(eth, reply)
	default:
		g.stats.drop(DropUnsupported)
	}
}

// handleARP answers ARP requests for the gateway address (RFC 826, "Packet
// Reception"), including RFC 5227 probes from 0.0.0.0.
func (g *Gateway) handleARP(eth header.Ethernet, reply func([]byte)) {
	a := header.ARP(eth.Payload())
	if !a.IsValid() {
		g.stats.drop(DropMalformed)
		return
	}
	if a.Op() != header.ARPRequest || a.TargetIP() != g.s.gw {
		g.stats.drop(DropNotLocal)
		return
	}
	if a.SenderMAC().IsMulticast() {
		g.stats.drop(DropMalformed)
		return
	}
	f, h := frameBuf(header.EthernetMinSize + header.ARPSize)
	header.Ethernet(f).Encode(&header.EthernetFields{Dst: eth.Src(), Src: g.s.mac, EtherType: header.EtherTypeARP})
	header.ARP(f[header.EthernetMinSize:]).Encode(&header.ARPFields{
		Op:        header.ARPReply,
		SenderMAC: g.s.mac,
		SenderIP:  g.s.gw,
		TargetMAC: a.SenderMAC(),
		TargetIP:  a.SenderIP(),
	})
	g.stats.inc(ARPReplies)
	g.emit(reply, f)
	putFrameBuf(h)
}

// handleIPv4 validates the IPv4 header once and dispatches on the
// protocol. Transport checksums are not verified: a guest with
// VIRTIO_NET_F_CSUM sends UDP and TCP with only the pseudo-header sum in
// the checksum field (virtio 1.2 §5.1.6.2, VIRTIO_NET_HDR_F_NEEDS_CSUM),
// and the link is memory, which does not corrupt bits.
func (g *Gateway) handleIPv4(eth header.Ethernet, reply func([]byte)) {
	ip := header.IPv4(eth.Payload())
	if !ip.IsValid() || int(ip.TotalLength()) > len(ip) {
		g.stats.drop(DropMalformed)
		return
	}
	ip = ip[:ip.TotalLength()] // drop Ethernet padding
	if !ip.IsChecksumValid() {
		g.stats.drop(DropBadChecksum)
		return
	}
	src, dst := ip.Src(), ip.Dst()
	if src.IsMulticast() || src == limitedBroadcast {
		g.stats.drop(DropMalformed)
		return
	}
	if ip.IsFragment() {
		// Nothing the gateway serves needs fragments (DHCP and DNS
		// queries fit one packet); reassembly would be state a guest could
		// exhaust.
		g.stats.drop(DropFragment)
		return
	}
	switch ip.Protocol() {
	case header.ProtoUDP:
		g.handleUDP(eth, ip, reply)
	case header.ProtoICMP:
		if dst != g.s.gw {
			g.stats.drop(DropNotLocal)
			return
		}
		g.handleICMP(eth, ip, reply)
	case header.ProtoTCP:
		if dst != g.s.gw {
			g.stats.drop(DropNotLocal)
			return
		}
		t := header.TCP(ip.Payload())
		if !t.IsValid() {
			g.stats.drop(DropMalformed)
			return
		}
		g.tcp.segment(eth.Src(), ip, t, reply)
	default:
		if dst != g.s.gw {
			g.stats.drop(DropNotLocal)
		} else {
			g.stats.drop(DropUnsupported)
		}
	}
}

var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// handleICMP answers echo requests (RFC 792, RFC 1122 §3.2.2.6). The reply
// carries the request's identifier, sequence and data; IP options are not
// reflected.
func (g *Gateway) handleICMP(eth header.Ethernet, ip header.IPv4, reply func([]byte)) {
	ic := header.ICMPv4(ip.Payload())
	if !ic.IsValid() {
		g.stats.drop(DropMalformed)
		return
	}
	if ic.Type() != header.ICMPv4Echo || ic.Code() != 0 {
		g.stats.drop(DropUnsupported)
		return
	}
	if header.Checksum(ic, 0) != 0xffff {
		g.stats.drop(DropBadChecksum)
		return
	}
	src := ip.Src()
	if !src.IsValid() || src.IsUnspecified() {
		g.stats.drop(DropMalformed)
		return
	}
	f, h := frameBuf(header.EthernetMinSize + header.IPv4MinSize + len(ic))
	off := g.encodeIPv4(f, eth.Src(), src, header.ProtoICMP, len(ic))
	r := header.ICMPv4(f[off:])
	copy(r, ic)
	r.SetType(header.ICMPv4EchoReply)
	// Only the type byte changed (8 -> 0): RFC 1624 §3 incremental update.
	r.SetChecksum(header.UpdateChecksum16(ic.Checksum(), uint16(header.ICMPv4Echo)<<8, uint16(header.ICMPv4EchoReply)<<8))
	g.stats.inc(ICMPEchoReplies)
	g.emit(reply, f)
	putFrameBuf(h)
}

// handleUDP dispatches DHCP (port 67) and DNS (port 53).
func (g *Gateway) handleUDP(eth header.Ethernet, ip header.IPv4, reply func([]byte)) {
	u := header.UDP(ip.Payload())
	if !u.IsValid() || int(u.Length()) < header.UDPSize || int(u.Length()) > len(u) {
		g.stats.drop(DropMalformed)
		return
	}
	dst := ip.Dst()
	switch {
	case u.DstPort() == dhcpServerPort && (dst == g.s.gw || dst == limitedBroadcast || dst == lastAddr(g.s.subnet)):
		g.handleDHCP(eth, ip, u, reply)
	case u.DstPort() == dnsPort && dst == g.s.gw:
		g.handleDNS(eth, ip, u, reply)
	case dst != g.s.gw:
		g.stats.drop(DropNotLocal)
	default:
		g.stats.drop(DropNoService)
	}
}

func (g *Gateway) handleDHCP(eth header.Ethernet, ip header.IPv4, u header.UDP, reply func([]byte)) {
	if u.SrcPort() != dhcpClientPort {
		g.stats.drop(DropDHCPMalformed)
		return
	}
	req, err := dhcpv4.FromBytes(u.Payload())
	if err != nil {
		g.stats.drop(DropDHCPMalformed)
		return
	}
	r, ok := g.dhcp.handle(req, eth.Src())
	if !ok {
		return
	}
	g.sendUDP(reply, r.dstMAC, r.dst, dhcpServerPort, dhcpClientPort, r.msg.ToBytes())
}

func (g *Gateway) handleDNS(eth header.Ethernet, ip header.IPv4, u header.UDP, reply func([]byte)) {
	srcMAC, src, sport := eth.Src(), ip.Src(), u.SrcPort()
	if src.IsUnspecified() || sport == 0 {
		g.stats.drop(DropMalformed)
		return
	}
	g.dns.query(u.Payload(), true, func(p []byte) {
		g.sendUDP(reply, srcMAC, src, dnsPort, sport, p)
	})
}

// leaseWriter writes the lease database to its file from one goroutine,
// coalescing bursts of changes into one write. A DHCPACK is sent before
// its lease reaches the disk (at most one write later): a crash in between
// costs nothing, since a renewing client whose binding is unknown keeps
// its address when it is free (dhcpServer.request).
type leaseWriter struct {
	path  string
	db    *leaseDB
	stats *Stats
	log   *slog.Logger

	wmu   sync.Mutex // serialises writes
	dirty chan struct{}
	quit  chan struct{}
	done  chan struct{}
}

func newLeaseWriter(path string, db *leaseDB, stats *Stats, log *slog.Logger) *leaseWriter {
	return &leaseWriter{path: path, db: db, stats: stats, log: log,
		dirty: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

func (w *leaseWriter) start() { go w.run() }

// kick schedules a write; it never blocks.
func (w *leaseWriter) kick() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

func (w *leaseWriter) run() {
	defer close(w.done)
	var lastErr time.Time
	for {
		select {
		case <-w.quit:
			return
		case <-w.dirty:
			if err := w.flush(); err != nil && time.Since(lastErr) > time.Minute {
				lastErr = time.Now()
				w.log.Error("dhcp lease file write failed", "err", err)
			}
		}
	}
}

// flush writes the current table now.
func (w *leaseWriter) flush() error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	b, err := w.db.marshal()
	if err == nil {
		err = writeFileAtomic(w.path, b)
	}
	if err != nil {
		w.stats.inc(LeaseWriteErrors)
		return fmt.Errorf("write lease file %s: %w", w.path, err)
	}
	w.stats.inc(LeaseWrites)
	return nil
}

// stop ends the writer goroutine and writes a last time.
func (w *leaseWriter) stop() error {
	close(w.quit)
	<-w.done
	return w.flush()
}
