package router

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/nat"
	"github.com/arcnet/vhost-arcnet/virtio"
)

const (
	// headCopy is how many bytes of each routed frame the router copies
	// and translates: Ethernet (14), IPv4 with options (60) and the
	// transport header fields the NAT rewrites (ports and checksum, 18
	// bytes of TCP), rounded up. It matches the switch's own head copy.
	headCopy = 128
	// headRoom is the size of a head buffer: room for the NAT engine to
	// build an ICMP error in place of a refused packet (28 + IPv4 header
	// + 8 bytes after the Ethernet header).
	headRoom = 256
	// genSize is the size of a buffer for a frame the router makes: an
	// ICMP error of at most 576 bytes (RFC 1812 §4.3.2.3) or an ARP
	// packet, behind an Ethernet header.
	genSize = header.EthernetMinSize + 576
	// icmpQuoteMax is how much of the offending datagram an ICMP error
	// quotes: "as much of the original datagram as possible without the
	// length of the ICMP datagram exceeding 576 bytes" (RFC 1812
	// §4.3.2.3), bounded by the head copy the router holds.
	icmpQuoteMax = 576 - header.IPv4MinSize - header.ICMPv4MinSize
	// arpInterval bounds the router's ARP requests for its next hop.
	arpInterval = 100 * time.Millisecond
	// maxNeighbours bounds the neighbour cache; it starts over when full.
	maxNeighbours = 1 << 14
)

// Options configures a Router.
type Options struct {
	// Subnet is the guest subnet; GatewayAddr and GatewayMAC are the
	// gateway's address and MAC on it. Frames to GatewayMAC for addresses
	// outside Subnet are routed; the rest go to Local.
	Subnet      netip.Prefix
	GatewayAddr netip.Addr
	GatewayMAC  header.MAC
	// Local is the gateway's own host (the services' HandlerPort): it
	// gets every frame to the gateway's MAC or broadcast that is not
	// routed. If it has SetPeer(datapath.Port), its replies enter the
	// switch through the router's attachment.
	Local datapath.Port
	// NAT translates routed packets; its external address is
	// ExternalAddr.
	NAT *nat.Engine
	// ExternalAddr is the router's address on the uplink link (the NAT
	// address); UplinkMAC its MAC there.
	ExternalAddr netip.Addr
	UplinkMAC    header.MAC
	// NextHop is the uplink link's next hop (the host's end of a TAP);
	// NextHopMAC its MAC if known, else it is resolved by ARP.
	NextHop    netip.Addr
	NextHopMAC header.MAC
	// ResolveNextHop, if set, is called instead of sending an ARP request
	// when the next hop's MAC is unknown (at most once per 100 ms): the
	// uplink learns it another way and calls SetNextHop (the XDP uplink
	// asks the kernel's neighbour table, since the host shares its
	// address and MAC). It runs on a datapath goroutine and must not
	// block.
	ResolveNextHop func()
	// MTU is the uplink's MTU (the largest IPv4 packet it takes).
	// Default 1500.
	MTU int
	// UplinkOffloads are the offloads the uplink takes (a TAP with a
	// virtio-net header: partial checksums, TSO); the switch segments
	// other GSO frames before they reach the router.
	UplinkOffloads datapath.RxOffloads
	// Neighbour returns the MAC of a guest address (the DHCP lease
	// table), for inbound packets to a guest the router has not seen
	// send. It may allocate: it is asked once per address, then cached.
	Neighbour func(netip.Addr) (header.MAC, bool)
	// NeighbourGen, if set, returns a number that changes when Neighbour's
	// answers may have changed; the cache is dropped when it moves.
	NeighbourGen func() uint64
	// ICMPRate bounds the ICMP errors the router sends per second
	// (RFC 1812 §4.3.2.8). Default 1000; negative: none.
	ICMPRate int
	// Logger receives the router's records; nil means slog.Default.
	Logger *slog.Logger
}

// Router routes between the switch and an uplink through a NAT engine; see
// the package documentation.
type Router struct {
	opt  Options
	log  *slog.Logger
	lan  lanPort
	up   upPort
	peer atomic.Pointer[datapath.Port] // the router's attachment to the switch
	upl  atomic.Pointer[datapath.Port] // the uplink

	gw4, net4, mask4, ext4 uint32
	hop4                   atomic.Uint32 // the next hop's address (SetNextHop)

	nextHopMAC atomic.Uint64 // MAC key | macValid once known
	lastARP    atomic.Int64  // unix ns of the last ARP request
	neigh      neighbours
	icmp       rateLimit

	loopbackLog, flowLimitLog limitedLog // warnings about a guest's refused packets

	stats Stats
	pool  sync.Pool // *batch
}

const macValid = 1 << 63

// New returns a router for opt. Attach SwitchPort to the switch with the
// gateway's MAC (spoofing allowed: it sends for the whole world), make
// UplinkPort the uplink's peer and give the uplink to SetUplink.
func New(opt Options) (*Router, error) {
	switch {
	case !opt.Subnet.IsValid() || !opt.Subnet.Addr().Is4():
		return nil, fmt.Errorf("router: subnet %v: want IPv4", opt.Subnet)
	case !opt.GatewayAddr.Is4() || !opt.Subnet.Contains(opt.GatewayAddr):
		return nil, fmt.Errorf("router: gateway %v: not in subnet %v", opt.GatewayAddr, opt.Subnet)
	case !opt.ExternalAddr.Is4() || opt.Subnet.Contains(opt.ExternalAddr):
		return nil, fmt.Errorf("router: external address %v: want IPv4 outside %v", opt.ExternalAddr, opt.Subnet)
	case !opt.NextHop.Is4():
		return nil, fmt.Errorf("router: next hop %v: want IPv4", opt.NextHop)
	case opt.NAT == nil || opt.Local == nil:
		return nil, errors.New("router: NAT engine and local port required")
	case opt.GatewayMAC.IsMulticast() || opt.UplinkMAC.IsMulticast() || opt.UplinkMAC == (header.MAC{}):
		return nil, errors.New("router: gateway and uplink MACs must be unicast")
	}
	if opt.MTU == 0 {
		opt.MTU = 1500
	}
	if opt.MTU < 576 || opt.MTU > 65535 {
		return nil, fmt.Errorf("router: MTU %d: want 576..65535", opt.MTU)
	}
	if opt.ICMPRate == 0 {
		opt.ICMPRate = 1000
	}
	r := &Router{opt: opt, log: opt.Logger}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.lan.r, r.up.r = r, r
	r.gw4 = be32(opt.GatewayAddr.AsSlice())
	pfx := opt.Subnet.Masked()
	r.net4 = be32(pfx.Addr().AsSlice())
	r.mask4 = ^uint32(0) << (32 - pfx.Bits())
	if pfx.Bits() == 0 {
		r.mask4 = 0
	}
	r.ext4 = be32(opt.ExternalAddr.AsSlice())
	r.hop4.Store(be32(opt.NextHop.AsSlice()))
	if opt.NextHopMAC != (header.MAC{}) {
		r.nextHopMAC.Store(macKey(opt.NextHopMAC) | macValid)
	}
	r.neigh.init()
	r.icmp.rate = int64(opt.ICMPRate)
	r.pool.New = func() any { return newBatch() }
	return r, nil
}

// SwitchPort returns the router's switch side: attach it to the switch with
// the gateway's MAC and AllowSpoofing.
func (r *Router) SwitchPort() datapath.Port { return &r.lan }

// UplinkPort returns the router's uplink side: the uplink's peer, where the
// frames it receives go.
func (r *Router) UplinkPort() datapath.Port { return &r.up }

// SetUplink sets the port routed frames go out of (nil: dropped).
func (r *Router) SetUplink(p datapath.Port) {
	if p == nil {
		r.upl.Store(nil)
		return
	}
	r.upl.Store(&p)
}

// SetNextHop makes addr the uplink's next hop, at mac; a zero mac makes
// its MAC unknown (resolved again before the next routed packet goes out).
// It may be called at any time, from any goroutine.
func (r *Router) SetNextHop(addr netip.Addr, mac header.MAC) error {
	if !addr.Is4() {
		return fmt.Errorf("router: next hop %v: want IPv4", addr)
	}
	if mac.IsMulticast() {
		return fmt.Errorf("router: next hop MAC %v: want unicast", mac)
	}
	// Between the two stores a packet may go to the old address's MAC,
	// which is what it would have done a moment earlier.
	r.hop4.Store(be32(addr.AsSlice()))
	if mac == (header.MAC{}) {
		r.nextHopMAC.Store(0)
	} else {
		r.nextHopMAC.Store(macKey(mac) | macValid)
	}
	return nil
}

// Stats returns the router's counters.
func (r *Router) Stats() *Stats { return &r.stats }

// lanPort is the router's attachment to the switch.
type lanPort struct {
	r     *Router
	stats datapath.Stats
}

// Name returns "gateway".
func (p *lanPort) Name() string { return "router" }

// Stats returns the counters of frames the switch gave the router (tx) and
// the router gave the switch (rx).
func (p *lanPort) Stats() *datapath.Stats { return &p.stats }

// SetPeer is called by the switch: where the router's frames (and the local
// services' replies) enter it.
func (p *lanPort) SetPeer(peer datapath.Port) {
	if peer == nil {
		p.r.peer.Store(nil)
	} else {
		p.r.peer.Store(&peer)
	}
	if ps, ok := p.r.opt.Local.(interface{ SetPeer(datapath.Port) }); ok {
		ps.SetPeer(peer)
	}
}

// RxOffloads returns the uplink's offloads: the switch hands the router GSO
// frames the uplink can take unsegmented.
func (p *lanPort) RxOffloads() datapath.RxOffloads { return p.r.opt.UplinkOffloads }

// Send routes the frames the switch delivered to the gateway's MAC.
func (p *lanPort) Send(frames []datapath.Frame) { p.r.route(frames, Out) }

// route routes frames in direction d, in batches of at most MaxBatch, with
// a scratch from the pool.
func (r *Router) route(frames []datapath.Frame, d Direction) {
	b := r.pool.Get().(*batch)
	for len(frames) > 0 {
		n := min(len(frames), datapath.MaxBatch)
		b.reset()
		r.neigh.checkGen(r.opt.NeighbourGen)
		if d == Out {
			r.outbound(b, frames[:n])
		} else {
			r.inbound(b, frames[:n])
		}
		frames = frames[n:]
	}
	r.pool.Put(b)
}

// upPort is the uplink's peer.
type upPort struct {
	r     *Router
	stats datapath.Stats
}

// Name returns "router-uplink".
func (p *upPort) Name() string { return "router-uplink" }

// Stats returns the counters of frames the uplink gave the router (tx) and
// the router gave the uplink (rx).
func (p *upPort) Stats() *datapath.Stats { return &p.stats }

// Send routes frames received from the uplink.
func (p *upPort) Send(frames []datapath.Frame) { p.r.route(frames, In) }

// batch is the scratch of one Send call.
type batch struct {
	heads [datapath.MaxBatch][headRoom]byte
	pkts  [datapath.MaxBatch]nat.Packet
	orig  [datapath.MaxBatch]int // packet -> index of its frame
	hls   [datapath.MaxBatch]int // bytes of heads[k] in use before translation
	segs  [datapath.MaxBatch][][]byte
	gen   [datapath.MaxBatch][genSize]byte
	gsegs [datapath.MaxBatch][1][]byte
	ngen  int

	local []datapath.Frame // frames for the gateway itself
	lan   []datapath.Frame // frames for the switch
	up    []datapath.Frame // frames for the uplink
}

func newBatch() *batch {
	b := &batch{
		local: make([]datapath.Frame, 0, datapath.MaxBatch),
		lan:   make([]datapath.Frame, 0, 2*datapath.MaxBatch),
		up:    make([]datapath.Frame, 0, 2*datapath.MaxBatch),
	}
	for i := range b.segs {
		b.segs[i] = make([][]byte, 0, 8)
	}
	return b
}

func (b *batch) reset() {
	b.local, b.lan, b.up = b.local[:0], b.lan[:0], b.up[:0]
	b.ngen = 0
}

// done drops the references a batch holds into other ports' buffers, so
// the pool does not keep guest memory slices alive.
func (b *batch) done(k int) {
	for i := range k {
		clear(b.segs[i])
		b.segs[i] = b.segs[i][:0]
		b.pkts[i].Buf = nil
	}
	for i := range b.ngen {
		b.gsegs[i][0] = nil
	}
	clear(b.local)
	clear(b.lan)
	clear(b.up)
}

// genBuf returns a buffer for a frame the router makes, or nil if the batch
// has used them all.
func (b *batch) genBuf() []byte {
	if b.ngen == len(b.gen) {
		return nil
	}
	b.ngen++
	return b.gen[b.ngen-1][:]
}

// head copies the first bytes of f (at most headCopy) into buffer k and
// returns their count; segs[k] gets the rest of the frame, in place.
func (b *batch) head(k int, f *datapath.Frame) int {
	h := b.heads[k][:headCopy]
	n := 0
	segs := b.segs[k][:0]
	segs = append(segs, nil) // the head, set by the caller
	for _, s := range f.Segs {
		if n < len(h) {
			c := copy(h[n:], s)
			n += c
			s = s[c:]
		}
		if len(s) > 0 {
			segs = append(segs, s)
		}
	}
	b.segs[k] = segs
	return n
}

// natFlags returns the NAT engine's view of a frame's offload state.
func natFlags(h *virtio.NetHdr) nat.Flags {
	var fl nat.Flags
	if h.Flags&virtio.NetHdrFNeedsCsum != 0 {
		fl |= nat.CsumPartial
	}
	if h.GSOType != virtio.NetHdrGSONone {
		fl |= nat.GSO | nat.CsumPartial
	}
	return fl
}

// emitFrame appends to list the frame made of head buffer k (its first n
// bytes) and the rest of the original frame, unless replaced.
func (b *batch) emitFrame(list []datapath.Frame, k, n int, f *datapath.Frame, replaced bool) []datapath.Frame {
	segs := b.segs[k]
	segs[0] = b.heads[k][:n]
	out := datapath.Frame{Hdr: f.Hdr, Segs: segs, Queue: f.Queue}
	if replaced {
		out.Hdr = virtio.NetHdr{}
		out.Segs = segs[:1]
		out.Len = n
	} else {
		out.Len = f.Len - b.hls[k] + n
	}
	out.Hdr.NumBuffers = 0
	return append(list, out)
}

// sendLAN hands frames to the switch.
func (r *Router) sendLAN(frames []datapath.Frame) {
	if len(frames) == 0 {
		return
	}
	peer := r.peer.Load()
	if peer == nil {
		r.lan.stats.Drop(datapath.DropNoRoute, uint64(len(frames)))
		return
	}
	countRx(&r.lan.stats, frames)
	(*peer).Send(frames)
}

// sendUp hands frames to the uplink.
func (r *Router) sendUp(frames []datapath.Frame, d Direction) {
	if len(frames) == 0 {
		return
	}
	up := r.upl.Load()
	if up == nil {
		r.stats.Drop(d, DropNoUplink, uint64(len(frames)))
		return
	}
	countRx(&r.up.stats, frames)
	(*up).Send(frames)
}

// countRx adds frames to the rx counters of st.
func countRx(st *datapath.Stats, frames []datapath.Frame) {
	bytes := 0
	for i := range frames {
		bytes += frames[i].Len
	}
	st.RxPackets.Add(uint64(len(frames)))
	st.RxBytes.Add(uint64(bytes))
}

// decTTL decrements the TTL of ip and updates its header checksum (RFC 1624
// §3: the TTL shares a 16-bit word with the protocol).
func decTTL(ip header.IPv4) {
	old := uint16(ip[8])<<8 | uint16(ip[9])
	ip[8]--
	ip.SetChecksum(header.UpdateChecksum16(ip.Checksum(), old, old-0x100))
}

func macKey(m header.MAC) uint64 {
	return uint64(m[0])<<40 | uint64(m[1])<<32 | uint64(m[2])<<24 | uint64(m[3])<<16 | uint64(m[4])<<8 | uint64(m[5])
}

func keyMAC(k uint64) header.MAC {
	return header.MAC{byte(k >> 40), byte(k >> 32), byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)}
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// inSubnet reports whether the big-endian address a is in the guest subnet.
func (r *Router) inSubnet(a uint32) bool { return a&r.mask4 == r.net4 }

// rateLimit is a token bucket of ICMP errors per second.
type rateLimit struct {
	mu     sync.Mutex
	rate   int64
	tokens int64
	last   int64
}

// allow reports whether one more error may be sent now.
func (l *rateLimit) allow() bool {
	if l.rate < 0 {
		return false
	}
	now := time.Now().UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	el := min(now-l.last, int64(time.Second))
	if add := el * l.rate / int64(time.Second); add > 0 {
		l.tokens = min(l.rate, l.tokens+add)
		l.last = now
	}
	if l.tokens <= 0 {
		return false
	}
	l.tokens--
	return true
}

// limitedLog lets a warning about a guest's refused packets through at most
// once a refusalLogEvery: a guest that floods must not flood the log too
// (each packet is counted in any case).
type limitedLog struct{ last atomic.Int64 }

// refusalLogEvery is the least time between two warnings of one kind.
const refusalLogEvery = time.Minute

// allow reports whether the warning may be logged now.
func (l *limitedLog) allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if last != 0 && now-last < int64(refusalLogEvery) {
		return false
	}
	return l.last.CompareAndSwap(last, now)
}

// logRefusal logs (rate-limited) that the NAT engine refused a guest's new
// flow because of a flow limit. p is the packet after Translate: the
// guest's own packet, or with replaced the ICMP error to the guest that
// replaced it.
func (r *Router) logRefusal(p *nat.Packet, replaced bool) {
	if p.Reason != nat.ReasonQuota && p.Reason != nat.ReasonTableFull {
		return
	}
	ip := header.IPv4(p.Buf)
	if len(ip) < header.IPv4MinSize || !r.flowLimitLog.allow() {
		return
	}
	guest := ip.Src()
	if replaced {
		guest = ip.Dst()
	}
	r.log.Warn("router: NAT flow limit reached, a guest's new flows refused; "+
		"the next are counted (nat drops by reason) and logged at most once a minute",
		"src", guest, "reason", p.Reason.String())
}
