package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/bits"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// The L2 switch between every guest port, the gateway and the uplink
// (ARCHITECTURE.md "A frame's path").
//
// A frame enters through the SwitchPort of the port that sent it (the
// port's peer) and goes, in the same call, to the Send of every port it is
// for: one port for a learned unicast destination, every other port for
// broadcast, multicast and unknown unicast (IEEE 802.1Q-2018 §8.8 filtering
// database; ageing per IEEE 802.1D-2004 §7.9.2). Frames of one batch are
// grouped by destination: each destination's Send is called once per batch
// with all the frames for it (more often only if software segmentation
// makes more than MaxBatch frames).
//
// Payload bytes are not copied by the switch: the frames it hands on are
// the first bytes of each frame (the headers it parsed, copied once into
// backend memory, see below) followed by the rest of the frame in place, in
// the sender's transmit buffers. A receiving guest port copies them once,
// straight into its receive buffers, with the virtio-net header's checksum
// and GSO metadata carried over; a GSO frame for a port that cannot take it
// is segmented in software (segment.go), and a partial checksum is
// completed by the receiving guest port if its guest lacks GUEST_CSUM.
//
// # Trust
//
// The sender can rewrite its buffers at any time. The switch copies each
// frame's first headCopy bytes (Ethernet, VLAN, IPv4 with options, the UDP
// ports: every field it decides on) into backend memory, decides on that
// copy, and hands the receivers that copy in place of the original bytes:
// what was checked is what is delivered.
//
// Anti-spoofing (on unless PortOptions.AllowSpoofing): a port may send only
// from its own MAC (configured, or the source of the first frame it sends;
// never another port's), and, when the switch has a LeaseTable, with IPv4
// or ARP sender address the one leased to that MAC, or 0.0.0.0 for DHCP
// (UDP to port 67), IGMP and ARP probes (RFC 5227 §2.1.1). ARP's sender
// hardware address must be the port's MAC too, and frames with stacked VLAN
// tags, which could hide an IPv4 header, are refused. Other frames are
// dropped and counted as drop_spoof on the sending port; the first one is
// logged. IPv6 and other EtherTypes are checked only for the source MAC
// (the gateway leases no IPv6 addresses). No port, spoofing allowed or not,
// can send from a MAC another port owns.
//
// # Concurrency
//
// SwitchPort.Send may be called from many goroutines at once (every guest
// port's transmit workers, the gateway's reply goroutines). The MAC table is
// read without locks (mactable.go); the port table is copy-on-write,
// loaded once per batch. Each SwitchPort has a preallocated scratch per
// queue pair (taken with TryLock once per batch; a concurrent second caller
// on the same queue gets a spare), so the forward path allocates nothing.
// Attach, Detach and a port's first frame (which claims its MAC) take the
// switch's mutex; nothing else on the forward path takes a lock but the
// scratch's own, once per batch.

// headCopy is how many bytes of each frame the switch copies into backend
// memory and decides on: Ethernet + VLAN (18), IPv4 with options (60), and
// the UDP destination port, rounded up.
const headCopy = 128

// MaxSwitchPorts is the largest number of ports a Switch holds at once.
const MaxSwitchPorts = 4096

// DefaultAgeingTime is how long a learned MAC stays without being seen:
// the recommended default of IEEE 802.1D-2004 §7.9.2, Table 7-5.
const DefaultAgeingTime = 300 * time.Second

// DefaultMACTableSize is the default capacity of the MAC table (entries).
const DefaultMACTableSize = 8192

// LeaseTable tells the switch which IPv4 address is leased to a MAC, for
// anti-spoofing (the gateway's DHCP server implements it).
type LeaseTable interface {
	// LeasedIP returns the IPv4 address currently leased to mac.
	LeasedIP(mac header.MAC) (netip.Addr, bool)
	// LeaseGeneration returns a number that changes whenever LeasedIP's
	// answer may have changed for some MAC. The switch caches answers
	// per port and asks again only when it moves, so LeasedIP is not on
	// the per-frame path.
	LeaseGeneration() uint64
}

// SwitchOptions configures a Switch.
type SwitchOptions struct {
	// AgeingTime is how long a learned MAC address is kept without
	// traffic from it; 0 means DefaultAgeingTime.
	AgeingTime time.Duration
	// MACTableSize is the capacity of the MAC table in entries; 0 means
	// DefaultMACTableSize.
	MACTableSize int
	// Leases, if set, makes anti-spoofing check IPv4 source addresses;
	// nil checks source MACs only.
	Leases LeaseTable
	// Now is the clock; nil means time.Now. Tests inject a fake one.
	Now func() time.Time
	// Logger receives the switch's records; nil means slog.Default.
	Logger *slog.Logger
}

// PortOptions configures one port of a Switch.
type PortOptions struct {
	// MAC is the port's own address. The zero value means: the source of
	// the first frame the port sends (anti-spoofing on) or none.
	MAC header.MAC
	// AllowSpoofing turns anti-spoofing off for the port: it may send from
	// any MAC and IPv4 address other ports do not own (a guest that routes
	// or bridges, the gateway, an uplink). Its source MACs are learned.
	AllowSpoofing bool
}

// Switch is a learning L2 switch between Ports; see the comment at the top
// of switch.go.
type Switch struct {
	log     *slog.Logger
	now     func() time.Time
	epoch   time.Time
	macs    *macTable
	leases  LeaseTable
	ports   atomic.Pointer[[]*SwitchPort]  // copy-on-write, indexed by SwitchPort.idx
	owners  atomic.Pointer[map[uint64]int] // own MAC -> port index, copy-on-write
	fragID  atomic.Uint32
	capture atomic.Pointer[Capture] // SetCapture

	// inPlace is held (read) by an uplink reader while a frame it read
	// in place in the one guest's memory goes through (inplace.go), and
	// by Attach (write) while it adds a port: no other guest's frame ever
	// passes through a guest's memory.
	inPlace sync.RWMutex
	// mu serialises Attach, Detach and MAC claims (copy-on-write writers).
	mu       sync.Mutex
	reserved map[int]bool // indexes of ports being detached

	scratchMu sync.Mutex
	scratches []*scratch // every scratch made (Detach waits for them)
	spare     []*scratch // free fallback scratches
}

// SwitchPort is a port's attachment to a Switch. Its Send is where the
// port's frames enter the switch: it is the port's peer. It implements
// Port; Name and Stats are those of the attached port.
type SwitchPort struct {
	sw     *Switch
	port   Port
	idx    int
	allow  bool
	offl   OffloadReceiver // nil: the port takes every frame as it is
	own    atomic.Uint64   // own MAC key | ownValid; 0 while unknown
	warned atomic.Bool
	// detached is set first thing by Detach: the port claims and learns
	// no address after it.
	detached atomic.Bool
	queues   [MaxQueuePairs]atomic.Pointer[scratch]
}

const ownValid = 1 << 63

// Destinations that are not a port index.
const (
	destFlood = -1 // every port but the sender
	destSelf  = -2 // the sender itself: dropped
)

// scratch is the reusable state of one batch through the switch.
type scratch struct {
	mu    sync.Mutex
	seq   atomic.Uint64 // odd while a batch runs (Detach waits for it)
	owner *SwitchPort   // nil for a spare
	spare bool

	heads  [MaxBatch][headCopy]byte
	segs   [MaxBatch][][]byte
	frames [MaxBatch]Frame
	dst    [MaxBatch]int
	dests  [MaxBatch]int
	tmpl   [maxSegHdr]byte
	emit   emitter

	// The lease of the port's MAC as last asked, for generation gen.
	leaseGen   uint64
	leaseMAC   uint64
	leaseIP    uint32
	leaseOK    bool
	leaseValid bool
	leaseAt    int64 // when it was asked
}

// NewSwitch returns a switch with no ports.
func NewSwitch(opt SwitchOptions) (*Switch, error) {
	if opt.AgeingTime < 0 || opt.MACTableSize < 0 {
		return nil, errors.New("datapath: negative switch ageing time or table size")
	}
	if opt.AgeingTime == 0 {
		opt.AgeingTime = DefaultAgeingTime
	}
	if opt.MACTableSize == 0 {
		opt.MACTableSize = DefaultMACTableSize
	}
	if opt.MACTableSize > 1<<20 {
		return nil, fmt.Errorf("datapath: MAC table size %d above %d", opt.MACTableSize, 1<<20)
	}
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	s := &Switch{
		log:      log,
		now:      now,
		epoch:    now(),
		macs:     newMACTable(opt.MACTableSize, int64(opt.AgeingTime)),
		leases:   opt.Leases,
		reserved: map[int]bool{},
	}
	s.ports.Store(new([]*SwitchPort))
	s.owners.Store(&map[uint64]int{})
	return s, nil
}

// clock returns the time in nanoseconds since the switch was made.
func (s *Switch) clock() int64 { return int64(s.now().Sub(s.epoch)) }

// peerSetter is a port whose transmitted frames go to a peer (GuestPort,
// HandlerPort).
type peerSetter interface{ SetPeer(Port) }

// Attach adds p to the switch and returns its attachment. If p has a
// SetPeer(Port) method (GuestPort and HandlerPort have), Attach makes the
// attachment p's peer, so that the frames p sends enter the switch.
func (s *Switch) Attach(p Port, opt PortOptions) (*SwitchPort, error) {
	s.inPlace.Lock() // before mu: a reader may take mu (claim) while it holds inPlace
	defer s.inPlace.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	var mac uint64
	if opt.MAC != (header.MAC{}) {
		mac = macKey(opt.MAC[:])
		if isGroupKey(mac) {
			return nil, fmt.Errorf("datapath: attach %s: MAC %s is a group address", p.Name(), opt.MAC)
		}
		if _, ok := (*s.owners.Load())[mac]; ok {
			return nil, fmt.Errorf("datapath: attach %s: MAC %s belongs to another port", p.Name(), opt.MAC)
		}
	}
	old := *s.ports.Load()
	idx := len(old)
	for i, q := range old {
		if q == nil && !s.reserved[i] {
			idx = i
			break
		}
	}
	if idx >= MaxSwitchPorts {
		return nil, fmt.Errorf("datapath: attach %s: the switch already has %d ports", p.Name(), MaxSwitchPorts)
	}
	sp := &SwitchPort{sw: s, port: p, idx: idx, allow: opt.AllowSpoofing}
	sp.offl, _ = p.(OffloadReceiver)
	ports := make([]*SwitchPort, max(len(old), idx+1))
	copy(ports, old)
	ports[idx] = sp
	if mac != 0 {
		s.own(sp, mac)
	}
	s.ports.Store(&ports)
	if ps, ok := p.(peerSetter); ok {
		ps.SetPeer(sp)
	}
	return sp, nil
}

// own records mac as sp's own address. Caller holds s.mu.
func (s *Switch) own(sp *SwitchPort, mac uint64) {
	owners := maps.Clone(*s.owners.Load())
	owners[mac] = sp.idx
	s.owners.Store(&owners)
	sp.own.Store(mac | ownValid)
	s.macs.setStatic(mac, sp.idx)
}

// claim makes src sp's own MAC (the first frame of a port without a
// configured MAC). It reports false if src is another port's, or sp already
// owns another MAC.
func (s *Switch) claim(sp *SwitchPort, src uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if own := sp.own.Load(); own != 0 {
		return own&^ownValid == src
	}
	if sp.detached.Load() {
		return false
	}
	if o, ok := (*s.owners.Load())[src]; ok && o != sp.idx {
		return false
	}
	s.own(sp, src)
	s.log.Info("switch port took its MAC address from its first frame",
		"port", sp.port.Name(), "mac", header.MAC(macBytes(src)).String())
	return true
}

// refuses reports whether sp may not be where mac is: mac is another
// port's own address, or sp is being detached.
func (sp *SwitchPort) refuses(mac uint64) bool {
	if sp.detached.Load() {
		return true
	}
	o, ok := (*sp.sw.owners.Load())[mac]
	return ok && o != sp.idx
}

// Detach removes sp from the switch: when it returns, the switch no longer
// calls the port's Send and has forgotten its addresses. Frames the port
// still sends are dropped (drop_no_route). Detach must not be called from
// a Port's Send.
func (s *Switch) Detach(sp *SwitchPort) {
	s.mu.Lock()
	old := *s.ports.Load()
	if sp.idx >= len(old) || old[sp.idx] != sp {
		s.mu.Unlock()
		return
	}
	sp.detached.Store(true)
	if ps, ok := sp.port.(peerSetter); ok {
		ps.SetPeer(nil)
	}
	ports := slices.Clone(old)
	ports[sp.idx] = nil
	s.reserved[sp.idx] = true // not reusable until its MAC entries are gone
	s.ports.Store(&ports)
	s.mu.Unlock()

	s.quiesce()
	s.macs.removePort(sp.idx)
	s.scratchMu.Lock()
	s.scratches = slices.DeleteFunc(s.scratches, func(sc *scratch) bool { return sc.owner == sp })
	s.scratchMu.Unlock()

	s.mu.Lock()
	owners := maps.Clone(*s.owners.Load())
	maps.DeleteFunc(owners, func(_ uint64, idx int) bool { return idx == sp.idx })
	s.owners.Store(&owners)
	delete(s.reserved, sp.idx)
	s.mu.Unlock()
}

// quiesce waits until every batch that was running has ended: a batch
// loads the port table after marking its scratch busy, so one that starts
// after this call sees the table as it is now.
func (s *Switch) quiesce() {
	s.scratchMu.Lock()
	all := slices.Clone(s.scratches)
	s.scratchMu.Unlock()
	for _, sc := range all {
		if q := sc.seq.Load(); q%2 == 1 {
			for sc.seq.Load() == q {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}
}

// Ports returns the attached ports, in attachment slot order.
func (s *Switch) Ports() []Port {
	var ps []Port
	for _, sp := range *s.ports.Load() {
		if sp != nil {
			ps = append(ps, sp.port)
		}
	}
	return ps
}

// Lookup returns the port the switch would send a frame for mac to, if it
// has learned (or been told) where mac is.
func (s *Switch) Lookup(mac header.MAC) (Port, bool) {
	idx, ok := s.macs.lookup(macKey(mac[:]), s.clock())
	ports := *s.ports.Load()
	if !ok || idx >= len(ports) || ports[idx] == nil {
		return nil, false
	}
	return ports[idx].port, true
}

// Name returns the attached port's name.
func (sp *SwitchPort) Name() string { return sp.port.Name() }

// Stats returns the attached port's counters; the switch adds its drops
// (spoof, no_route, malformed) of frames the port sent to them.
func (sp *SwitchPort) Stats() *Stats { return sp.port.Stats() }

// Port returns the attached port.
func (sp *SwitchPort) Port() Port { return sp.port }

// MAC returns the port's own MAC address, once configured or learned
// (and not moved to another port: TakeMAC).
func (sp *SwitchPort) MAC() (header.MAC, bool) {
	own := sp.own.Load()
	return header.MAC(macBytes(own &^ ownValid)), own != 0 && own&ownMoved == 0
}

func macBytes(k uint64) [6]byte {
	return [6]byte{byte(k >> 40), byte(k >> 32), byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)}
}

// Send switches frames that the attached port sent (all from one queue
// pair; see Port). It returns when every receiver is done with them.
func (sp *SwitchPort) Send(frames []Frame) {
	if len(frames) == 0 {
		return
	}
	s := sp.sw
	sc := sp.acquire(frames[0].Queue)
	sc.seq.Add(1)
	// Released in a defer: a guest-memory fault while a frame is copied
	// (a frontend that shrank its memory, virtio/fault.go) unwinds through
	// here, and Detach waits for every scratch to be idle.
	defer sp.done(sc)
	ports := *s.ports.Load()
	if sp.idx >= len(ports) || ports[sp.idx] != sp {
		sp.port.Stats().Drop(DropNoRoute, uint64(len(frames)))
	} else {
		now := s.clock()
		for len(frames) > 0 {
			n := min(len(frames), MaxBatch)
			s.forward(sp, sc, ports, frames[:n], now)
			frames = frames[n:]
		}
	}
}

// done ends a batch on scratch sc and releases it.
func (sp *SwitchPort) done(sc *scratch) {
	sc.seq.Add(1)
	sp.release(sc)
}

// acquire returns the scratch of queue pair q, locked, or a spare one if
// another goroutine is using it.
func (sp *SwitchPort) acquire(q uint16) *scratch {
	slot := &sp.queues[int(q)%MaxQueuePairs]
	sc := slot.Load()
	if sc == nil {
		sc = sp.sw.newScratch(sp)
		if !slot.CompareAndSwap(nil, sc) {
			sc = slot.Load()
		}
	}
	if sc.mu.TryLock() {
		return sc
	}
	s := sp.sw
	s.scratchMu.Lock()
	if n := len(s.spare); n > 0 {
		sc = s.spare[n-1]
		s.spare = s.spare[:n-1]
		s.scratchMu.Unlock()
	} else {
		s.scratchMu.Unlock()
		sc = s.newScratch(nil)
	}
	sc.mu.Lock()
	return sc
}

func (sp *SwitchPort) release(sc *scratch) {
	if sc.spare {
		sc.leaseValid = false // a spare serves any port
	}
	sc.mu.Unlock()
	if sc.spare {
		s := sp.sw
		s.scratchMu.Lock()
		s.spare = append(s.spare, sc)
		s.scratchMu.Unlock()
	}
}

// newScratch returns a new scratch of port owner's, or a spare one (nil
// owner), registered for Detach's quiescence unless owner is detached.
func (s *Switch) newScratch(owner *SwitchPort) *scratch {
	sc := &scratch{owner: owner, spare: owner == nil}
	for i := range sc.segs {
		sc.segs[i] = make([][]byte, 0, 4)
		sc.emit.segs[i] = make([][]byte, 0, 4)
	}
	s.scratchMu.Lock()
	if owner == nil || !owner.detached.Load() {
		s.scratches = append(s.scratches, sc)
	}
	s.scratchMu.Unlock()
	return sc
}

// verdict is the anti-spoofing decision on one frame.
type verdict int

const (
	pass verdict = iota
	spoofed
	malformed
)

// forward switches one batch of at most MaxBatch frames from sp.
func (s *Switch) forward(sp *SwitchPort, sc *scratch, ports []*SwitchPort, frames []Frame, now int64) {
	var spoof, bad, noRoute uint64
	nf, nd := 0, 0
	flood, gso := false, false
	lastDst, lastD := uint64(1<<63), 0 // no MAC key has bit 63
	checkIP := !sp.allow && s.leases != nil
	if checkIP {
		if g := s.leases.LeaseGeneration(); g != sc.leaseGen {
			sc.leaseGen, sc.leaseValid = g, false
		}
	}
	for i := range frames {
		f := &frames[i]
		hl, total := sc.rewrite(nf, f)
		if total < minFrameLen || total > maxFrameLen {
			bad++
			continue
		}
		head := sc.heads[nf][:hl]
		dst, src := macKey(head[0:6]), macKey(head[6:12])
		if isGroupKey(src) || src == 0 {
			bad++ // IEEE 802-2014 §8.2: a source address is an individual address
			continue
		}
		if !sp.allow {
			switch s.checkSource(sp, sc, head, src, checkIP, now) {
			case spoofed:
				spoof++
				s.warnSpoof(sp, src, head)
				continue
			case malformed:
				bad++
				continue
			}
		} else if s.macs.learn(src, sp.idx, now, sp.refuses) == learnRefuse {
			spoof++
			s.warnSpoof(sp, src, head)
			continue
		}
		d := lastD
		if dst != lastDst { // a batch mostly goes to one place: look up once
			d = s.destination(sp, ports, dst, now)
			lastDst, lastD = dst, d
		}
		if d == destSelf {
			noRoute++ // for the sender itself: filtered (IEEE 802.1Q-2018 §8.6.3)
			continue
		}
		out := &sc.frames[nf]
		out.Hdr, out.Segs, out.Len, out.Queue = f.Hdr, sc.segs[nf], total, f.Queue
		out.flow, out.flowSet = f.flow, f.flowSet // the switch changes no address
		// Only the checksum and GSO metadata travel (virtio 1.2 §5.1.6.2
		// gives DATA_VALID and RSC_INFO no meaning on transmit); a
		// sender must not make a receiver skip checksum validation.
		out.Hdr.Flags &= virtio.NetHdrFNeedsCsum
		out.Hdr.NumBuffers = 0
		if f.Hdr.GSOType != virtio.NetHdrGSONone {
			gso = true
		}
		sc.dst[nf] = d
		nf++
		if d == destFlood {
			flood = true
		} else if !slices.Contains(sc.dests[:nd], d) {
			sc.dests[nd] = d
			nd++
		}
	}
	if c := s.capture.Load(); c != nil && nf > 0 {
		(*c).Capture(sc.frames[:nf])
	}
	var unsegmentable uint64 // bit i: frame i could not be segmented
	if flood {
		others := 0
		for idx, p := range ports {
			if p != nil && p != sp {
				others++
				unsegmentable |= s.deliver(sc, p, idx, nf, gso)
			}
		}
		if others == 0 {
			noRoute += uint64(nf)
		}
	} else {
		for _, idx := range sc.dests[:nd] {
			unsegmentable |= s.deliver(sc, ports[idx], idx, nf, gso)
		}
	}
	bad += uint64(bits.OnesCount64(unsegmentable))
	st := sp.port.Stats()
	st.Drop(DropSpoof, spoof)
	st.Drop(DropMalformed, bad)
	st.Drop(DropNoRoute, noRoute)
}

// destination returns the index of the port a frame from sp to MAC dst
// goes to: destFlood for a group address or an unknown (or aged out)
// destination, destSelf for one learned on sp itself.
func (s *Switch) destination(sp *SwitchPort, ports []*SwitchPort, dst uint64, now int64) int {
	if isGroupKey(dst) {
		return destFlood
	}
	idx, ok := s.macs.lookup(dst, now)
	switch {
	case !ok:
		return destFlood
	case idx == sp.idx:
		return destSelf
	case idx < len(ports) && ports[idx] != nil:
		return idx
	}
	return destFlood
}

// deliver's bit set holds a batch: MaxBatch must not exceed 64.
var _ [64 - MaxBatch]struct{}

// deliver sends port p (index idx) the frames of the batch that are for it,
// segmenting GSO frames it cannot take. It returns the frames that could
// not be segmented (dropped as malformed, counted once on the sender) as a
// bit set (MaxBatch is 64).
func (s *Switch) deliver(sc *scratch, p *SwitchPort, idx, nf int, gso bool) uint64 {
	e := &sc.emit
	e.dst, e.n = p.port, 0
	var off RxOffloads
	asked := false
	var bad uint64
	for i := 0; i < nf; i++ {
		if d := sc.dst[i]; d != idx && d != destFlood {
			continue
		}
		f := &sc.frames[i]
		if gso && f.Hdr.GSOType != virtio.NetHdrGSONone && p.offl != nil {
			if !asked {
				off, asked = p.offl.RxOffloads(), true
			}
			if !off.AcceptsGSO(f.Hdr.GSOType) {
				if !segmentFrame(e, f, &sc.tmpl, off.Csum, s.fragID.Add(1)) {
					bad |= 1 << i
				}
				continue
			}
		}
		e.add(f)
	}
	e.flush()
	e.dst = nil
	return bad
}

// rewrite makes frame i of the batch from f: its first headCopy bytes
// copied into backend memory, followed by the rest of f in place. It
// returns the length of the copy and of the frame.
func (sc *scratch) rewrite(i int, f *Frame) (hl, total int) {
	head := sc.heads[i][:]
	hl = copyFrame(head, f.Segs)
	segs, tail := appendTail(append(sc.segs[i][:0], head[:hl]), f.Segs, hl)
	sc.segs[i] = segs
	return hl, hl + tail
}
