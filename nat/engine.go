package nat

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// maxBatch is the largest number of packets Translate handles in one pass;
// longer slices are processed in passes of this size.
const maxBatch = 256

// Engine is a NAT engine for one external IPv4 address and one guest prefix.
// It is safe for concurrent use. Translate takes the engine's mutex only for
// packets that change the table (new flows, state changes, expiry, drops):
// packets of established flows are translated without it (fast.go), so
// several queues can translate at once. Every other method takes the mutex.
type Engine struct {
	mu  sync.Mutex
	cfg Config

	tab   table
	wheel wheel
	epoch time.Time

	ext      addr // cfg.External, mapped
	ext4     uint32
	pfx4     uint32 // guest prefix network, big-endian integer
	pfxMask4 uint32

	timeouts  [NumTCPStates]int64      // per TCP state, ns
	fastTO    [fastClassMask + 1]int64 // timeout by fast class
	fastSlack [fastClassMask + 1]int64 // fastSlack of it
	udp       int64
	udpStr    int64
	icmp      int64
	fragTO    int64

	owners    []owner
	ownerFree uint32
	ownerIdx  map[addr]uint32

	mappings  []udpMapping
	mapFree   uint32
	mapByExt  []uint32 // 65536 entries: external port -> mapping index
	mapByHost map[hostPort]uint32

	fwd     map[fwdKey]hostPort
	fwdBits [2][1024]uint64 // forwarded ports, TCP and UDP

	frags    []fragEntry
	fragMask uint64

	stats Stats

	// Written without the mutex.
	wheelAt atomic.Int64  // wheel.cursor, so that Translate sees without the lock when expiry is due
	fastOut atomic.Uint64 // packets the lock-free path translated, by side (Stats adds them)
	fastIn  atomic.Uint64
	fastHP  atomic.Uint64 // of which hairpinned
	sinkHit atomic.Uint64 // keeps the batch's early loads alive (almost never incremented)
}

type owner struct {
	addr addr
	n    int32
	next uint32 // free list
}

type hostPort struct {
	addr addr
	port uint16
}

type udpMapping struct {
	host hostPort
	ext  uint16
	refs uint32
}

type fwdKey struct {
	proto Proto
	port  uint16
}

// New returns an engine for cfg.
func New(cfg Config) (*Engine, error) {
	if err := cfg.fill(); err != nil {
		return nil, fmt.Errorf("nat config: %w", err)
	}
	e := &Engine{cfg: cfg, epoch: cfg.Clock()}
	var seed [6]uint64
	for i := range seed {
		seed[i] = rand.Uint64()
	}
	e.tab.init(cfg.MaxFlows, cfg.CacheSize, seed)
	e.ext = mapped4(cfg.External)
	e.ext4 = e.ext.v4()
	e.pfx4 = mapped4(cfg.GuestPrefix.Addr()).v4()
	e.pfxMask4 = ^uint32(0) << (32 - cfg.GuestPrefix.Bits())
	if cfg.GuestPrefix.Bits() == 0 {
		e.pfxMask4 = 0
	}
	t := &cfg.Timeouts
	e.timeouts = [NumTCPStates]int64{int64(t.TCPSynSent), int64(t.TCPSynRecv), int64(t.TCPEstablished),
		int64(t.TCPFinWait), int64(t.TCPCloseWait), int64(t.TCPLastAck), int64(t.TCPTimeWait), int64(t.TCPClose)}
	e.udp, e.udpStr, e.icmp, e.fragTO = int64(t.UDP), int64(t.UDPStream), int64(t.ICMP), int64(t.Fragment)
	e.fastTO[fastTCP], e.fastTO[fastUDPStream], e.fastTO[fastUDPNew], e.fastTO[fastICMP] =
		e.timeouts[TCPEstablished], e.udpStr, e.udp, e.icmp
	for c, to := range e.fastTO {
		e.fastSlack[c] = fastSlack(to)
	}
	e.owners = make([]owner, 1, 64)
	e.ownerIdx = make(map[addr]uint32)
	e.mappings = make([]udpMapping, 1, 64)
	e.mapByExt = make([]uint32, 1<<16)
	e.mapByHost = make(map[hostPort]uint32)
	e.fwd = make(map[fwdKey]hostPort)
	n := 1
	for n < cfg.MaxFragments {
		n <<= 1
	}
	e.frags = make([]fragEntry, n)
	e.fragMask = uint64(n - 1)
	e.wheel.cursor = 0
	e.wheelAt.Store(0)
	return e, nil
}

func (e *Engine) now() int64 { return int64(e.cfg.Clock().Sub(e.epoch)) }

// Translate processes a batch of packets that arrived from one side,
// rewriting each in place and setting its Verdict and Reason. It allocates
// nothing once the tables have grown to their working size, and it also
// reclaims a bounded number of expired flows (about two per packet).
//
// Packets of established flows take no lock; the first packet of a batch
// that needs the table changed takes the engine's mutex and holds it for the
// rest of the batch (packets are still handled in order). Expiry work is
// done only when the wheel has passed a tick, and skipped for this call if
// another goroutine holds the mutex.
func (e *Engine) Translate(from Side, pkts []Packet) {
	now := e.now()
	if now>>tickShift > e.wheelAt.Load() && e.mu.TryLock() {
		e.stats.Expired += uint64(e.advance(now, 2*len(pkts)+16, false))
		e.mu.Unlock()
	}
	ps := pass{ix: e.tab.ix.Load()}
	for len(pkts) > 0 {
		n := min(len(pkts), maxBatch)
		e.translateBatch(from, pkts[:n], now, &ps)
		pkts = pkts[n:]
	}
	if ps.locked {
		e.mu.Unlock()
	}
	if ps.fast != 0 {
		if from == Guest {
			e.fastOut.Add(ps.fast)
		} else {
			e.fastIn.Add(ps.fast)
		}
		if ps.hairpin != 0 {
			e.fastHP.Add(ps.hairpin)
		}
	}
}

// Expire reclaims every flow whose idle timeout has passed and returns how
// many it reclaimed. Translate reclaims expired flows a few at a time; call
// Expire from a timer (for example once a second) to bound the memory held
// by dead flows when traffic is low.
func (e *Engine) Expire() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.advance(e.now(), 1<<62, true)
	e.stats.Expired += uint64(n)
	return n
}

// Stats returns a copy of the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.UDPMappings = uint64(len(e.mapByHost))
	e.addFast(&s)
	return s
}

// Len returns the number of live flows (expired ones count until reclaimed).
func (e *Engine) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tab.n
}

// FlowInfo describes a flow for introspection.
type FlowInfo struct {
	Orig, Reply Tuple    // directions as packets arrive, before translation
	OrigSide    Side     // where the first packet came from
	State       TCPState // TCP only
	Expires     time.Time
}

// Flows calls fn for each live flow until it returns false. It is meant for
// debugging and tests: it walks the whole table under the engine's lock.
func (e *Engine) Flows(fn func(FlowInfo) bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for c := range e.tab.chunks {
		chunk := e.tab.dir[c].Load()
		for j := range chunk {
			f := &chunk[j]
			if f.word.Load() == 0 {
				continue // free
			}
			k0, k1 := f.key(0), f.key(1)
			if !fn(FlowInfo{Orig: k0.tuple(), Reply: k1.tuple(), OrigSide: k0.Side,
				State: f.state, Expires: e.epoch.Add(time.Duration(f.deadline()))}) {
				return
			}
		}
	}
}

// ErrForward is wrapped by AddForward and RemoveForward errors.
var ErrForward = errors.New("invalid port forward")

// AddForward adds or replaces a port forward. New connections to the
// external address on f.Port go to f.Guest; flows already open keep their
// translation. SNAT never hands out a forwarded port.
func (e *Engine) AddForward(f Forward) error {
	if f.Proto != TCP && f.Proto != UDP {
		return fmt.Errorf("forward %v: protocol: %w", f.Proto, ErrForward)
	}
	if f.Port == 0 || f.Guest.Port() == 0 {
		return fmt.Errorf("forward %d -> %v: port 0: %w", f.Port, f.Guest, ErrForward)
	}
	a := f.Guest.Addr().Unmap()
	if !a.Is4() || !e.cfg.GuestPrefix.Contains(a) {
		return fmt.Errorf("forward to %v: not a guest address: %w", a, ErrForward)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fwd[fwdKey{f.Proto, f.Port}] = hostPort{mapped4(a), f.Guest.Port()}
	e.fwdBits[protoBit(f.Proto)][f.Port>>6] |= 1 << (f.Port & 63)
	return nil
}

// RemoveForward removes the forward of external port port. Flows it opened
// keep working until they expire (as with netfilter's DNAT rules).
func (e *Engine) RemoveForward(proto Proto, port uint16) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := fwdKey{proto, port}
	if _, ok := e.fwd[k]; !ok {
		return fmt.Errorf("forward %v %d: not found: %w", proto, port, ErrForward)
	}
	delete(e.fwd, k)
	e.fwdBits[protoBit(proto)][port>>6] &^= 1 << (port & 63)
	return nil
}

// Forwards returns the port forwards, sorted by protocol and port.
func (e *Engine) Forwards() []Forward {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Forward, 0, len(e.fwd))
	for k, v := range e.fwd {
		out = append(out, Forward{Proto: k.proto, Port: k.port,
			Guest: netip.AddrPortFrom(v.addr.netip(), v.port)})
	}
	slices.SortFunc(out, func(a, b Forward) int {
		if a.Proto != b.Proto {
			return int(a.Proto) - int(b.Proto)
		}
		return int(a.Port) - int(b.Port)
	})
	return out
}

func protoBit(p Proto) int {
	if p == UDP {
		return 1
	}
	return 0
}

func (e *Engine) forwarded(p Proto, port uint16) bool {
	if p != TCP && p != UDP {
		return false
	}
	return e.fwdBits[protoBit(p)][port>>6]&(1<<(port&63)) != 0
}

// addFast adds the packets counted by the lock-free path to s.
func (e *Engine) addFast(s *Stats) {
	s.Outbound += e.fastOut.Load()
	s.Inbound += e.fastIn.Load()
	s.Hairpin += e.fastHP.Load()
}

// kill marks f dead if its deadline has passed at now, and reports whether
// it did. It swaps the flow's word to 0 by CAS, so that a packet that
// refreshed the flow without the lock in the meantime keeps it alive, and a
// packet that raced to it fails its own CAS. The caller (holding the mutex)
// then reclaims it.
func (e *Engine) kill(f *flow, now int64) bool {
	for {
		w := f.word.Load()
		if int64(w)>>3 > now {
			return false
		}
		if f.word.CompareAndSwap(w, 0) {
			return true
		}
	}
}

// setDeadline sets f's deadline and its fast class, from its protocol,
// state and flags as the caller (holding the mutex) left them.
func (e *Engine) setDeadline(f *flow, dl int64) {
	// Opening a TCP flow sets the same word twice (open, then tcpTrack on
	// the SYN). The store is a release (storeRel): the record's keys, set
	// before, become visible first.
	if w := uint64(dl)<<3 | fastClass(f); f.word.Load() != w {
		storeRel((*uint64)(unsafe.Pointer(&f.word)), w)
	}
}

// extend moves f's deadline to dl unless a packet translated without the
// lock has already moved it further (its batch may have read the clock
// later than this one).
func (e *Engine) extend(f *flow, dl int64) {
	c := fastClass(f)
	for {
		w := f.word.Load()
		if int64(w)>>3 >= dl && w&fastClassMask == c {
			return
		}
		if f.word.CompareAndSwap(w, uint64(dl)<<3|c) {
			return
		}
	}
}

// fastClass returns the fast class of f (fast.go).
func fastClass(f *flow) uint64 {
	switch f.proto() {
	case TCP:
		if f.state == TCPEstablished {
			return fastTCP
		}
	case UDP:
		if f.flags&flagUDPReplied != 0 {
			return fastUDPStream
		}
		return fastUDPNew
	case ICMP:
		return fastICMP
	}
	return fastNone
}

// reclaim removes flow i, which kill has marked dead, from the index, the
// wheel, its quota and mapping, and frees it.
func (e *Engine) reclaim(i uint32) {
	f := e.tab.flow(i)
	e.reclaimHashed(i, e.tab.hashOf(f, 0), e.tab.hashOf(f, 1))
}

// reclaimHashed is reclaim for a caller that has the hashes of both keys.
func (e *Engine) reclaimHashed(i uint32, h0, h1 uint64) {
	f := e.tab.flow(i)
	c := e.tab.coldOf(i)
	e.unschedule(i, f)
	e.tab.remove(i, h0, h1)
	e.countFlow(f, -1)
	if o := &e.owners[c.owner]; c.owner != 0 {
		o.n--
		if o.n == 0 {
			delete(e.ownerIdx, o.addr)
			o.next = e.ownerFree
			e.ownerFree = c.owner
		}
	}
	if c.mapping != 0 {
		e.unrefMapping(c.mapping)
	}
	e.tab.release(i)
}

// countFlow adds d to the live-flow counters of f.
func (e *Engine) countFlow(f *flow, d int) {
	u := uint64(d)
	switch f.proto() {
	case TCP:
		e.stats.FlowsTCP += u
		e.stats.TCPStates[f.state] += u
	case UDP:
		e.stats.FlowsUDP += u
	case ICMP:
		e.stats.FlowsICMP += u
	}
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
