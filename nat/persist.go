package nat

// Flow persistence: a snapshot of the flow table that a new process (after
// a restart, an upgrade or a crash) loads before its uplink passes traffic,
// so that connections in flight keep their external ports.
//
// Format (all integers big-endian), version 1:
//
//	header, 32 bytes:
//	  0  magic "ARCNATFL"
//	  8  version uint16
//	 10  record length uint16 (snapRecLen)
//	 12  record count uint32
//	 16  saved at, Unix nanoseconds int64
//	 24  external address [4]byte (informational; every record names it too)
//	 28  reserved, zero
//	records, snapRecLen bytes each:
//	  0  direction 0 key: src [4], dst [4], src port, dst port (12 bytes)
//	 12  direction 1 key: the same (12 bytes)
//	 24  protocol, side of direction 0, side of direction 1, TCP state,
//	     flags, bit 0: the flow holds a UDP mapping (6 bytes)
//	 30  deadline, Unix nanoseconds int64
//	trailer: CRC-32C (Castagnoli) of everything before it, uint32
//
// A record holds what cannot be derived: the checksum deltas, the owner
// (whose quota the flow uses) and the UDP mapping are rebuilt from the keys
// on load, exactly as open builds them. The deadline is wall-clock time, so
// the time the process was down counts against the flow's idle timeout.
//
// Nothing in a snapshot is trusted on load: each record must be a
// translation this engine's configuration could have made (external
// address, guest prefix, port range, consistent keys), may not collide with
// a flow already loaded, and must fit the limits; others are skipped and
// counted. A file that is damaged as a whole (magic, version, length,
// checksum) is refused with an error and loads nothing.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

const (
	snapMagic   = "ARCNATFL"
	snapVersion = 1
	snapHdrLen  = 32
	snapRecLen  = 38
	snapTailLen = 4

	snapHasMapping = 1
	snapFlagMask   = flagUDPReplied | flagHairpin | flagDNAT | flagFinOrig | flagFinReply
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// ErrSnapshot is wrapped by the errors of Restore for a snapshot that is
// damaged as a whole or of another version.
var ErrSnapshot = errors.New("invalid NAT flow snapshot")

// SnapshotBytesPerFlow is the size of one flow in a snapshot.
const SnapshotBytesPerFlow = snapRecLen

// Activity returns a number that changes whenever the flow table may have
// changed in a way a snapshot records: flows opened or reclaimed, and
// packets translated (which move deadlines and TCP states). A saver writes
// a snapshot only when it differs from the last one's (Restore leaves it
// alone: what it restored is in the file it came from).
func (e *Engine) Activity() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	e.addFast(&s)
	return s.Created + s.Expired + s.Outbound + s.Inbound + s.Hairpin
}

// AppendSnapshot appends a snapshot of the live flows to dst and returns it
// with the number of flows it holds. Flows already dead but not reclaimed
// are left out. It takes the engine's lock once per chunk of 1024 flow
// records (10 to 15 µs, BenchmarkSnapshot), so packets wait no longer than
// that; a flow reclaimed and its record reused during the walk may appear
// twice, and Restore refuses the second as a collision. It allocates only
// when dst is too small.
func (e *Engine) AppendSnapshot(dst []byte) ([]byte, int) {
	e.mu.Lock()
	wall := e.epoch.UnixNano()
	start := len(dst)
	dst = append(dst, snapMagic...)
	dst = binary.BigEndian.AppendUint16(dst, snapVersion)
	dst = binary.BigEndian.AppendUint16(dst, snapRecLen)
	dst = binary.BigEndian.AppendUint32(dst, 0) // count, set below
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.cfg.Clock().UnixNano()))
	dst = binary.BigEndian.AppendUint32(dst, e.ext4)
	dst = binary.BigEndian.AppendUint32(dst, 0)
	e.mu.Unlock()
	n := 0
	for c := 0; ; c++ {
		e.mu.Lock()
		if c >= e.tab.chunks {
			e.mu.Unlock()
			break
		}
		now := e.now()
		chunk, cold := e.tab.dir[c].Load(), e.tab.cold[c]
		for j := range chunk {
			f := &chunk[j]
			k0, k1 := f.key(0), f.key(1)
			dl := f.deadline()
			if dl <= now { // free records too: their word is 0
				continue
			}
			var r [snapRecLen]byte
			putKey(r[0:12], &k0)
			putKey(r[12:24], &k1)
			r[24] = byte(k0.Proto)
			r[25] = byte(k0.Side)
			r[26] = byte(k1.Side)
			r[27] = byte(f.state)
			r[28] = f.flags
			if cold[j].mapping != 0 {
				r[29] = snapHasMapping
			}
			binary.BigEndian.PutUint64(r[30:], uint64(wall+dl))
			dst = append(dst, r[:]...)
			n++
		}
		e.mu.Unlock()
	}
	binary.BigEndian.PutUint32(dst[start+12:], uint32(n))
	dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crc32c))
	return dst, n
}

func putKey(b []byte, k *flowKey) {
	binary.BigEndian.PutUint32(b[0:], uint32(k.Src))
	binary.BigEndian.PutUint32(b[4:], uint32(k.Dst))
	binary.BigEndian.PutUint16(b[8:], k.SrcPort)
	binary.BigEndian.PutUint16(b[10:], k.DstPort)
}

func getKey(b []byte, proto Proto, side Side) flowKey {
	return flowKey{Src: addr(binary.BigEndian.Uint32(b[0:])), Dst: addr(binary.BigEndian.Uint32(b[4:])),
		SrcPort: binary.BigEndian.Uint16(b[8:]), DstPort: binary.BigEndian.Uint16(b[10:]), Proto: proto, Side: side}
}

// RestoreStats says what Restore did with a snapshot's records.
type RestoreStats struct {
	Restored int       // flows re-created
	Expired  int       // past their deadline (or dead by the state's current timeout)
	Skipped  int       // do not fit the configuration or are inconsistent (another external address, prefix, port range)
	Refused  int       // over the global flow limit or a guest's quota, or colliding with a flow already there
	SavedAt  time.Time // when the snapshot was written
}

// Restore re-creates the flows of a snapshot made by AppendSnapshot (of this
// or an earlier process) in the engine: with their keys, external ports and
// identifiers, TCP states and flags, and the remaining part of their idle
// timeouts (at most the current configuration's timeout for their state).
// Call it before the engine translates traffic; flows already in the table
// are kept and a record that collides with one is refused. A snapshot
// damaged as a whole (ErrSnapshot) restores nothing.
func (e *Engine) Restore(b []byte) (RestoreStats, error) {
	var st RestoreStats
	if len(b) < snapHdrLen+snapTailLen || string(b[:8]) != snapMagic {
		return st, fmt.Errorf("%w: not a snapshot (%d bytes)", ErrSnapshot, len(b))
	}
	if v := binary.BigEndian.Uint16(b[8:]); v != snapVersion {
		return st, fmt.Errorf("%w: version %d, want %d", ErrSnapshot, v, snapVersion)
	}
	if l := binary.BigEndian.Uint16(b[10:]); l != snapRecLen {
		return st, fmt.Errorf("%w: record length %d, want %d", ErrSnapshot, l, snapRecLen)
	}
	count := uint64(binary.BigEndian.Uint32(b[12:]))
	if want := snapHdrLen + count*snapRecLen + snapTailLen; uint64(len(b)) != want {
		return st, fmt.Errorf("%w: %d bytes for %d flows, want %d (truncated?)", ErrSnapshot, len(b), count, want)
	}
	body := b[:len(b)-snapTailLen]
	if got, want := crc32.Checksum(body, crc32c), binary.BigEndian.Uint32(b[len(body):]); got != want {
		return st, fmt.Errorf("%w: checksum %08x, want %08x", ErrSnapshot, got, want)
	}
	st.SavedAt = time.Unix(0, int64(binary.BigEndian.Uint64(b[16:])))

	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	wall := e.epoch.UnixNano()
	for r := body[snapHdrLen:]; len(r) >= snapRecLen; r = r[snapRecLen:] {
		switch e.restoreOne(r[:snapRecLen], now, wall) {
		case restoreOK:
			st.Restored++
		case restoreExpired:
			st.Expired++
		case restoreSkipped:
			st.Skipped++
		default:
			st.Refused++
		}
	}
	return st, nil
}

const (
	restoreOK = iota
	restoreExpired
	restoreSkipped
	restoreRefused
)

// restoreOne re-creates the flow of record r, if it is valid and fits.
func (e *Engine) restoreOne(r []byte, now, wall int64) int {
	proto, side0, side1, state, flags, extra := Proto(r[24]), Side(r[25]), Side(r[26]), TCPState(r[27]), r[28], r[29]
	if (proto != TCP && proto != UDP && proto != ICMP) || side0 > Uplink || side1 > Uplink ||
		state >= NumTCPStates || (proto != TCP && state != TCPSynSent) ||
		flags&^snapFlagMask != 0 || extra&^snapHasMapping != 0 {
		return restoreSkipped
	}
	k0, k1 := getKey(r[0:12], proto, side0), getKey(r[12:24], proto, side1)
	owner, hostEP, extPort, ok := e.checkRestored(&k0, &k1, flags)
	if !ok {
		return restoreSkipped
	}
	// A UDP flow a guest opens always holds a mapping; one from the
	// uplink holds one when a mapping (not a forward) opened it.
	hasMapping := extra&snapHasMapping != 0
	if hasMapping && proto != UDP || !hasMapping && proto == UDP && side0 == Guest ||
		hasMapping && !e.allowed(extPort) {
		return restoreSkipped
	}

	// The deadline: what was left of it, at most the current timeout.
	var to int64
	switch {
	case proto == TCP:
		to = e.timeouts[state]
	case proto == UDP && flags&flagUDPReplied != 0:
		to = e.udpStr
	case proto == UDP:
		to = e.udp
	default:
		to = e.icmp
	}
	left := int64(binary.BigEndian.Uint64(r[30:])) - wall - now
	if left <= 0 {
		return restoreExpired
	}
	left = min(left, to)

	if e.tab.lookup(&k0, k0.hash(&e.tab.seed)) != 0 || e.tab.lookup(&k1, k1.hash(&e.tab.seed)) != 0 {
		return restoreRefused
	}
	if e.tab.n >= e.tab.limit {
		return restoreRefused
	}
	oi := e.ownerIdx[owner]
	if oi != 0 && int(e.owners[oi].n) >= e.cfg.MaxFlowsPerGuest {
		return restoreRefused
	}
	var mi uint32
	if hasMapping {
		// The endpoint-independent mapping (RFC 4787 REQ-1) the flow used:
		// the same guest endpoint keeps the same external port.
		mi = e.mapByHost[hostEP]
		switch {
		case mi != 0 && e.mappings[mi].ext != extPort:
			return restoreRefused
		case mi == 0 && e.mapByExt[extPort] != 0:
			return restoreRefused
		case mi == 0:
			mi = e.addMapping(hostEP, extPort)
		}
	}

	i := e.tab.alloc()
	if i == 0 {
		return restoreRefused
	}
	f := e.tab.flow(i)
	f.setKeys(&k0, &k1)
	f.flags = flags
	f.state = state
	e.setDeadline(f, now+left)
	c := e.tab.coldOf(i)
	if mi != 0 {
		e.mappings[mi].refs++
		c.mapping = mi
	}
	if oi == 0 {
		oi = e.newOwner(owner)
	}
	e.owners[oi].n++
	c.owner = oi
	e.tab.insert(i)
	e.schedule(i, f)
	e.countFlow(f, 1)
	return restoreOK
}

// checkRestored reports whether keys k0 and k1 (flags fl) are a flow that
// open could have made with this configuration, and returns the guest
// whose quota it uses, the guest endpoint of its UDP mapping, if any, and
// the external port (echo identifier) replies arrive at.
func (e *Engine) checkRestored(k0, k1 *flowKey, fl uint8) (owner addr, host hostPort, ext uint16, ok bool) {
	inPfx := func(a addr) bool { return a.v4()&e.pfxMask4 == e.pfx4 }
	// t is the first packet as translated: the reverse of the reply key.
	t := k1.reverse()
	if k0.Proto == ICMP {
		// Requests carry the identifier as the source port, replies as the
		// destination port; the other is 0.
		if k0.DstPort != 0 || t.DstPort != 0 || k0.Side != Guest || k1.Side != Uplink {
			return 0, host, 0, false
		}
	}
	switch {
	case k0.Side == Guest && k1.Side == Uplink: // SNAT
		if !inPfx(k0.Src) || k0.Dst == e.ext || t.Src != e.ext || t.Dst != k0.Dst || t.DstPort != k0.DstPort ||
			fl&(flagHairpin|flagDNAT) != 0 {
			return 0, host, 0, false
		}
		owner = k0.Src
	case k0.Side == Guest && k1.Side == Guest: // hairpin through a forward
		if !inPfx(k0.Src) || k0.Dst != e.ext || t.Src != e.ext || !inPfx(t.Dst) ||
			fl&(flagHairpin|flagDNAT) != flagHairpin {
			return 0, host, 0, false
		}
		owner = k0.Src
	case k0.Side == Uplink && k1.Side == Guest: // DNAT: a forward or a UDP mapping
		if k0.Dst != e.ext || t.Src != k0.Src || t.SrcPort != k0.SrcPort || !inPfx(t.Dst) ||
			fl&(flagHairpin|flagDNAT) != flagDNAT || k0.DstPort == 0 || t.DstPort == 0 {
			return 0, host, 0, false
		}
		return t.Dst, hostPort{t.Dst, t.DstPort}, k0.DstPort, true
	default:
		return 0, host, 0, false
	}
	// The external port open chose for SNAT: the guest's own (port
	// preservation) where allowed, or one of the range; any identifier
	// for ICMP unless the address is shared.
	ext = t.SrcPort
	switch {
	case k0.Proto == ICMP && !e.cfg.SharedAddress:
	case ext == k0.SrcPort && ext != 0 && e.allowed(ext):
	case ext >= e.cfg.PortMin && ext <= e.cfg.PortMax:
	default:
		return 0, host, 0, false
	}
	if k0.Proto == UDP && k0.SrcPort == 0 {
		return 0, host, 0, false
	}
	return owner, hostPort{k0.Src, k0.SrcPort}, ext, true
}
