package nat

import "math/rand/v2"

// emergencyBudget is the expiry work done before refusing a new flow for a
// full table or quota: bounded, so a guest hammering its quota cannot make
// each packet expensive.
const emergencyBudget = 512

// open creates the flow for the first packet m of a connection, or refuses
// it (setting p's verdict), and returns the packet's ref (direction 0) or 0.
func (e *Engine) open(from Side, p *Packet, m *meta, now int64) ref {
	k := &m.key
	b := p.Buf
	if k.Proto == TCP && b[int(m.l4)+13]&tcpRST != 0 {
		p.Reason = ReasonNoFlow // never open a flow on a reset
		return 0
	}
	if k.Proto == ICMP && !m.echo {
		p.Reason = ReasonNoFlow // an echo reply without its request
		return 0
	}
	t0, t1, side1, owner, flags, mapIdx, ok := e.target(from, p, m)
	if !ok {
		return 0
	}
	oi, ok := e.admit(from, p, owner, now)
	if !ok {
		return 0
	}
	// The first packet as translated (t0, t1) and the key of its replies
	// (r0, r1), as words (replyWords says why).
	var r0, r1, h1 uint64 // h1: the reply key's hash (the index's insert takes it)

	// The external port (or echo identifier) for SNAT.
	if from == Guest {
		if k.Proto == UDP {
			mapIdx = e.udpMapping(k.Src, k.SrcPort)
			if mapIdx == 0 {
				e.refuse(from, p, ReasonNoPort)
				return 0
			}
			t1 = t1&^0xffff | uint64(e.mappings[mapIdx].ext)
			var taken bool
			if r0, r1, h1, taken = e.replyTaken(t0, t1, side1); taken {
				// Only possible for hairpin to a guest that already uses that
				// tuple; refuse rather than alias two flows.
				e.unrefMapping0(mapIdx)
				e.refuse(from, p, ReasonNoPort)
				return 0
			}
		} else if r0, r1, h1, ok = e.pickPort(t0, t1, side1); !ok {
			e.refuse(from, p, ReasonNoPort)
			return 0
		}
	} else {
		var taken bool
		if r0, r1, h1, taken = e.replyTaken(t0, t1, side1); taken {
			// The guest already uses that tuple for a connection of its own.
			e.refuse(from, p, ReasonNoPort)
			return 0
		}
	}

	i := e.tab.alloc()
	if i == 0 {
		e.refuse(from, p, ReasonTableFull) // cannot happen: checked above
		return 0
	}
	f := e.tab.flow(i)
	f.setKeysWords(m.w0, m.w1, r0, r1)
	f.flags = flags
	f.state = TCPSynSent
	switch k.Proto {
	case TCP:
		e.setDeadline(f, now+e.timeouts[TCPSynSent])
	case UDP:
		e.setDeadline(f, now+e.udp)
	default:
		e.setDeadline(f, now+e.icmp)
	}
	if mapIdx != 0 {
		e.mappings[mapIdx].refs++
		e.tab.coldOf(i).mapping = mapIdx
	}
	if oi == 0 {
		oi = e.newOwner(owner)
	}
	e.owners[oi].n++
	e.tab.coldOf(i).owner = oi
	e.tab.insertHashed(i, m.hash, h1) // m.hash: the key's (translateBatch, translateSerial)
	e.schedule(i, f)
	e.countFlow(f, 1)
	e.stats.Created++
	return i << 1
}

// target decides where a new flow's first packet goes: SNAT to the
// external address for a guest's packet (or, hairpin, DNAT to the guest
// behind a forward of the external address), DNAT for an inbound packet to
// a port forward or an endpoint-independent UDP mapping (RFC 4787 REQ-8).
// It returns the first packet as translated (t0, t1: its key as words; the
// SNAT source port is chosen later), the side replies arrive from, the
// guest the flow counts against, the flow's flags and its UDP mapping. ok
// false: no flow may be opened (p.Reason says why).
func (e *Engine) target(from Side, p *Packet, m *meta) (t0, t1 uint64, side1 Side, owner addr, flags uint8, mapIdx uint32, ok bool) {
	k := &m.key
	t0, t1 = m.w0, m.w1
	if from == Guest {
		owner = k.Src
		t0 = t0&0xffffffff | uint64(e.ext)<<32
		side1 = Uplink
		if k.Dst == e.ext {
			// Hairpin: a guest reaching a port forward of the external address.
			fw, ok := e.fwd[fwdKey{k.Proto, k.DstPort}]
			if !ok || k.Proto == ICMP {
				p.Reason = ReasonNoFlow
				return t0, t1, side1, owner, flags, 0, false
			}
			t0, t1 = dnatWords(t0, t1, fw)
			side1 = Guest
			flags |= flagHairpin
		}
		return t0, t1, side1, owner, flags, 0, true
	}
	if k.Proto == TCP && p.Buf[int(m.l4)+13]&(tcpSYN|tcpACK) != tcpSYN {
		p.Reason = ReasonNoFlow // only a SYN opens an inbound connection
		return t0, t1, side1, owner, flags, 0, false
	}
	if k.Proto == ICMP {
		p.Reason = ReasonNoFlow
		return t0, t1, side1, owner, flags, 0, false
	}
	flags |= flagDNAT
	side1 = Guest
	var to hostPort
	if fw, ok := e.fwd[fwdKey{k.Proto, k.DstPort}]; ok {
		to = fw
	} else if k.Proto == UDP && e.mapByExt[k.DstPort] != 0 {
		// RFC 4787 REQ-8 endpoint-independent filtering: any remote may
		// send to a mapped port.
		mapIdx = e.mapByExt[k.DstPort]
		to = e.mappings[mapIdx].host
	} else {
		p.Reason = ReasonNoFlow
		return t0, t1, side1, owner, flags, 0, false
	}
	t0, t1 = dnatWords(t0, t1, to)
	return t0, t1, side1, to.addr, flags, mapIdx, true
}

// replyTaken returns the key replies to a packet translated to key t0, t1
// arrive with (replyWords), its hash, and whether a flow already has it.
func (e *Engine) replyTaken(t0, t1 uint64, side Side) (r0, r1, h uint64, taken bool) {
	r0, r1 = replyWords(t0, t1, side)
	h = hashWords(r0, r1, &e.tab.seed)
	return r0, r1, h, e.tab.lookupWords(r0, r1, h) != 0
}

// dnatWords returns key t0, t1 (as words) with hp as its destination.
func dnatWords(t0, t1 uint64, hp hostPort) (uint64, uint64) {
	return t0&^0xffffffff | uint64(hp.addr), t1&^(0xffff<<16) | uint64(hp.port)<<16
}

// admit checks the limits before any port is taken: the global flow limit
// and the owner's quota, each after reclaiming a bounded number of expired
// flows, those in the wheel's current tick included (a timeout shorter than
// a tick can leave a full table of dead flows all there). It returns the owner's index (0: none yet). ok false: refused
// (answered as Config.Refusal says).
func (e *Engine) admit(from Side, p *Packet, owner addr, now int64) (oi uint32, ok bool) {
	if e.tab.n >= e.tab.limit {
		e.stats.Expired += uint64(e.advance(now, emergencyBudget, true))
		if e.tab.n >= e.tab.limit {
			e.refuse(from, p, ReasonTableFull)
			return 0, false
		}
	}
	oi = e.ownerIdx[owner]
	if oi != 0 && int(e.owners[oi].n) >= e.cfg.MaxFlowsPerGuest {
		e.stats.Expired += uint64(e.advance(now, emergencyBudget, true))
		oi = e.ownerIdx[owner]
		if oi != 0 && int(e.owners[oi].n) >= e.cfg.MaxFlowsPerGuest {
			e.refuse(from, p, ReasonQuota)
			return 0, false
		}
	}
	return oi, true
}

// pickPort chooses the source port (TCP port or ICMP echo identifier) of
// the translated first packet (t0, t1: its key as words, with the guest's
// port) so that the reply key is unused, and returns that key (r0, r1) and
// its hash (for the index, which then need not hash it again): the guest's
// own port when free (port preservation), otherwise one from the
// configured range, starting at a random point.
// Allocation is per destination: the same external port serves different
// remote endpoints (as netfilter does). RFC 5382 REQ-1 asks for
// endpoint-independent TCP mapping; port preservation gives it whenever the
// guest's port is free.
func (e *Engine) pickPort(t0, t1 uint64, side Side) (r0, r1, h uint64, ok bool) {
	proto := Proto(t1 >> 32)
	// The reply key's destination port is the source port chosen.
	r0, r1 = replyWords(t0, t1&^0xffff, side)
	free := func(port uint16) bool {
		if e.forwarded(proto, port) {
			return false
		}
		w1 := r1 | uint64(port)<<16
		h = hashWords(r0, w1, &e.tab.seed)
		return e.tab.lookupIndexWords(r0, w1, h) == 0
	}
	want := uint16(t1)
	if (want != 0 || proto == ICMP) && e.allowed(want) && free(want) {
		return r0, r1 | uint64(want)<<16, h, true
	}
	lo, n := uint32(e.cfg.PortMin), uint32(e.cfg.PortMax)-uint32(e.cfg.PortMin)+1
	if proto == ICMP && !e.cfg.SharedAddress {
		lo, n = 0, 1<<16
	}
	start := rand.Uint32N(n)
	for j := uint32(0); j < 128 && j < n; j++ {
		if port := uint16(lo + (start+j)%n); free(port) {
			return r0, r1 | uint64(port)<<16, h, true
		}
	}
	return 0, 0, 0, false
}

// allowed reports whether the guest's own port (echo identifier) may be
// kept as the external one: always, unless the address is shared with the
// host (Config.SharedAddress) and the port lies outside the range.
func (e *Engine) allowed(port uint16) bool {
	return !e.cfg.SharedAddress || (port >= e.cfg.PortMin && port <= e.cfg.PortMax)
}

// udpMapping returns the endpoint-independent mapping (RFC 4787 REQ-1) of
// guest endpoint addr:port, creating it (keeping the guest's port when
// free, REQ-3 port preservation) if needed. It returns 0 when no port is
// free. A new mapping has no references until a flow takes one.
func (e *Engine) udpMapping(a addr, port uint16) uint32 {
	hp := hostPort{a, port}
	if mi := e.mapByHost[hp]; mi != 0 {
		return mi
	}
	ext := uint16(0)
	if port != 0 && e.allowed(port) && e.mapByExt[port] == 0 && !e.forwarded(UDP, port) {
		ext = port
	} else {
		lo, n := uint32(e.cfg.PortMin), uint32(e.cfg.PortMax)-uint32(e.cfg.PortMin)+1
		start := rand.Uint32N(n)
		for j := uint32(0); j < 128 && j < n; j++ {
			c := uint16(lo + (start+j)%n)
			if e.mapByExt[c] == 0 && !e.forwarded(UDP, c) {
				ext = c
				break
			}
		}
		if ext == 0 {
			return 0
		}
	}
	return e.addMapping(hp, ext)
}

// addMapping records the UDP mapping of guest endpoint hp to external port
// ext (both free) and returns its index.
func (e *Engine) addMapping(hp hostPort, ext uint16) uint32 {
	var mi uint32
	if e.mapFree != 0 {
		mi = e.mapFree
		e.mapFree = e.mappings[mi].refs // the free list runs through refs
	} else {
		mi = uint32(len(e.mappings))
		e.mappings = append(e.mappings, udpMapping{})
	}
	e.mappings[mi] = udpMapping{host: hp, ext: ext}
	e.mapByHost[hp] = mi
	e.mapByExt[ext] = mi
	return mi
}

// unrefMapping drops one flow's reference to mapping mi.
func (e *Engine) unrefMapping(mi uint32) {
	e.mappings[mi].refs--
	e.unrefMapping0(mi)
}

// unrefMapping0 frees mapping mi if no flow uses it.
func (e *Engine) unrefMapping0(mi uint32) {
	mp := &e.mappings[mi]
	if mp.refs != 0 {
		return
	}
	delete(e.mapByHost, mp.host)
	e.mapByExt[mp.ext] = 0
	*mp = udpMapping{refs: e.mapFree}
	e.mapFree = mi
}

func (e *Engine) newOwner(a addr) uint32 {
	var oi uint32
	if e.ownerFree != 0 {
		oi = e.ownerFree
		e.ownerFree = e.owners[oi].next
	} else {
		oi = uint32(len(e.owners))
		e.owners = append(e.owners, owner{})
	}
	e.owners[oi] = owner{addr: a}
	e.ownerIdx[a] = oi
	return oi
}
