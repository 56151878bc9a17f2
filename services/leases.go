package services

import (
	"errors"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LeaseState is the state of one record of the lease database.
type LeaseState uint8

// Lease states.
const (
	// LeaseOffered: the address was offered (DHCPOFFER) and is held for the
	// client for a short time.
	LeaseOffered LeaseState = iota + 1
	// LeaseBound: the address is leased (DHCPACK) until Expires. After
	// Expires the record stays, so that the client gets the same address
	// back, until the address is needed for another client.
	LeaseBound
	// LeaseReleased: the client gave the address back (DHCPRELEASE); the
	// record is kept as a preference, like an expired lease.
	LeaseReleased
	// LeaseDeclined: a client reported the address in use by someone else
	// (DHCPDECLINE); it is not handed out until Expires. MAC is nil.
	LeaseDeclined
)

var leaseStateNames = [...]string{
	LeaseOffered:  "offered",
	LeaseBound:    "bound",
	LeaseReleased: "released",
	LeaseDeclined: "declined",
}

// String returns the state's name as used in the lease file.
func (s LeaseState) String() string {
	if int(s) < len(leaseStateNames) && leaseStateNames[s] != "" {
		return leaseStateNames[s]
	}
	return "unknown"
}

func parseLeaseState(s string) (LeaseState, bool) {
	for i, n := range leaseStateNames {
		if n != "" && n == s {
			return LeaseState(i), true
		}
	}
	return 0, false
}

// Lease is a copy of one record of the DHCP lease database.
type Lease struct {
	MAC      net.HardwareAddr // nil for LeaseDeclined
	Addr     netip.Addr
	Hostname string // the client's sanitised host name (DHCP option 12), "" if none
	State    LeaseState
	Expires  time.Time
}

const (
	// offerHold is how long an offered address stays reserved for the
	// client that was offered it (RFC 2131 §4.3.1 lets the server choose).
	offerHold = 60 * time.Second
	// declineHold is how long a declined address is kept out of the pool
	// (RFC 2131 §4.3.3 says to mark it "not available"; we retry later in
	// case the conflicting host went away).
	declineHold = 10 * time.Minute
)

var errPoolExhausted = errors.New("dhcp pool exhausted")

type lease struct {
	mac      [6]byte // for LeaseDeclined: who declined (not indexed in byMAC)
	addr     netip.Addr
	hostname string
	state    LeaseState
	expires  time.Time
}

// active reports whether the record holds its address at time now (a
// current lease, a pending offer, a declined address still quarantined).
func (l *lease) active(now time.Time) bool {
	switch l.state {
	case LeaseBound, LeaseOffered, LeaseDeclined:
		return now.Before(l.expires)
	}
	return false
}

// leaseDB is the DHCP server's address table. One mutex guards it: DHCP
// messages are rare, and lookups for DNS and anti-spoofing take the read
// side.
type leaseDB struct {
	s *settings

	mu     sync.RWMutex
	byMAC  map[[6]byte]*lease
	byIP   map[netip.Addr]*lease
	byName map[string]*lease // the most recent bound record per host name
	cursor uint32            // next pool address to try for a never-used address
	// res and resAddrs are the static leases (Config.Reservations, then
	// AddReservation and RemoveReservation at run time), both ways.
	res      map[[6]byte]netip.Addr
	resAddrs map[netip.Addr][6]byte

	// gen counts ownership changes (an address bound to another MAC, a
	// release, a decline): the switch caches LookupMAC answers per port and
	// asks again when gen moves.
	gen atomic.Uint64
	// changed is called, without mu held, after every change that should
	// reach the lease file.
	changed func()
}

func newLeaseDB(s *settings) *leaseDB {
	return &leaseDB{
		s:        s,
		byMAC:    make(map[[6]byte]*lease),
		byIP:     make(map[netip.Addr]*lease),
		byName:   make(map[string]*lease),
		cursor:   addrU32(s.poolStart),
		res:      maps.Clone(s.reservations),
		resAddrs: maps.Clone(s.reservedAddrs),
		changed:  func() {},
	}
}

// assignable reports whether addr may be leased to mac at all: a
// reservation for mac, or a pool address that is not reserved, not the
// gateway's and not the host's.
func (db *leaseDB) assignable(addr netip.Addr, mac [6]byte) bool {
	if !addr.Is4() {
		return false
	}
	if owner, ok := db.resAddrs[addr]; ok {
		return owner == mac
	}
	if addr == db.s.gw || addr == db.s.hostAddr {
		return false
	}
	return !addr.Less(db.s.poolStart) && !db.s.poolEnd.Less(addr)
}

// free reports whether addr is not held by a client other than mac.
func (db *leaseDB) free(addr netip.Addr, mac [6]byte, now time.Time) bool {
	l := db.byIP[addr]
	if l == nil {
		return true
	}
	if l.state == LeaseDeclined {
		return !l.active(now)
	}
	return l.mac == mac || !l.active(now)
}

// choose picks the address to offer mac, in the order of RFC 2131 §4.3.1:
// the client's reservation, its current or previous binding, the address it
// asked for, a never-used pool address, the least recently expired one.
func (db *leaseDB) choose(mac [6]byte, requested netip.Addr, now time.Time) (netip.Addr, error) {
	if a, ok := db.res[mac]; ok {
		return a, nil
	}
	if l := db.byMAC[mac]; l != nil && db.assignable(l.addr, mac) {
		return l.addr, nil
	}
	if requested.IsValid() && db.assignable(requested, mac) && db.free(requested, mac, now) {
		return requested, nil
	}
	// A never-used address: among len(byIP)+len(reserved)+3 consecutive
	// pool positions at least one is neither recorded nor excluded, unless
	// the pool is smaller than that; so the scan is bounded by the table
	// size, not the pool size.
	start, end := addrU32(db.s.poolStart), addrU32(db.s.poolEnd)
	size := uint64(end-start) + 1
	tries := min(size, uint64(len(db.byIP)+len(db.resAddrs)+3))
	c := db.cursor
	for range tries {
		if c < start || c > end {
			c = start
		}
		a := u32Addr(c)
		c++
		if db.byIP[a] == nil && db.assignable(a, mac) {
			db.cursor = c
			return a, nil
		}
	}
	// Reclaim the record that stopped holding its address longest ago.
	var oldest *lease
	for _, l := range db.byIP {
		if !l.active(now) && db.assignable(l.addr, mac) && (oldest == nil || l.expires.Before(oldest.expires)) {
			oldest = l
		}
	}
	if oldest != nil {
		return oldest.addr, nil
	}
	return netip.Addr{}, errPoolExhausted
}

// remove deletes l from every index. Caller holds mu.
func (db *leaseDB) remove(l *lease) {
	if db.byIP[l.addr] == l {
		delete(db.byIP, l.addr)
	}
	if l.state != LeaseDeclined && db.byMAC[l.mac] == l {
		delete(db.byMAC, l.mac)
	}
	if l.hostname != "" && db.byName[l.hostname] == l {
		delete(db.byName, l.hostname)
	}
}

// put records mac at addr in state st until expires, replacing the client's
// record at another address and a stale record of another client at addr.
// It reports whether the owner of an address changed. Caller holds mu.
func (db *leaseDB) put(mac [6]byte, addr netip.Addr, hostname string, st LeaseState, expires time.Time) (owner bool) {
	if old := db.byMAC[mac]; old != nil && old.addr != addr {
		db.remove(old)
		owner = true
	}
	l := db.byIP[addr]
	if l != nil && (l.state == LeaseDeclined || l.mac != mac) {
		db.remove(l)
		l = nil
	}
	if l == nil {
		l = &lease{mac: mac, addr: addr}
		db.byIP[addr] = l
		db.byMAC[mac] = l
		owner = true
	}
	if st == LeaseBound && l.state != LeaseBound {
		owner = true
	}
	if hostname != "" && hostname != l.hostname {
		if l.hostname != "" && db.byName[l.hostname] == l {
			delete(db.byName, l.hostname)
		}
		l.hostname = hostname
	}
	if st == LeaseBound && l.hostname != "" {
		db.byName[l.hostname] = l
	}
	l.state, l.expires = st, expires
	if owner {
		db.gen.Add(1)
	}
	return owner
}

// offer picks an address for a DHCPDISCOVER and holds it for the client.
func (db *leaseDB) offer(mac [6]byte, requested netip.Addr, hostname string, now time.Time) (netip.Addr, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	a, err := db.choose(mac, requested, now)
	if err != nil {
		return a, err
	}
	if l := db.byIP[a]; l != nil && l.mac == mac && l.state == LeaseBound && l.active(now) {
		return a, nil // already leased to this client: keep the binding
	}
	db.put(mac, a, hostname, LeaseOffered, now.Add(offerHold))
	return a, nil
}

// bind leases addr to mac (DHCPREQUEST). It fails when addr cannot be
// leased to mac: not assignable, or held by another client.
func (db *leaseDB) bind(mac [6]byte, addr netip.Addr, hostname string, now time.Time) bool {
	db.mu.Lock()
	if !db.assignable(addr, mac) || !db.free(addr, mac, now) {
		db.mu.Unlock()
		return false
	}
	db.put(mac, addr, hostname, LeaseBound, now.Add(db.s.leaseTime))
	db.mu.Unlock()
	db.changed()
	return true
}

// cancelOffer forgets a pending offer to mac (the client chose another
// server, RFC 2131 §4.3.2).
func (db *leaseDB) cancelOffer(mac [6]byte) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if l := db.byMAC[mac]; l != nil && l.state == LeaseOffered {
		db.remove(l)
	}
}

// release ends mac's lease of addr (DHCPRELEASE, RFC 2131 §4.3.4); the
// record stays as the client's preference.
func (db *leaseDB) release(mac [6]byte, addr netip.Addr, now time.Time) bool {
	db.mu.Lock()
	l := db.byMAC[mac]
	if l == nil || l.addr != addr || l.state != LeaseBound {
		db.mu.Unlock()
		return false
	}
	if l.hostname != "" && db.byName[l.hostname] == l {
		delete(db.byName, l.hostname)
	}
	l.state, l.expires = LeaseReleased, now
	db.gen.Add(1)
	db.mu.Unlock()
	db.changed()
	return true
}

// decline quarantines addr after mac reported it in use (DHCPDECLINE, RFC
// 2131 §4.3.3). Only the client the address was offered or leased to can
// decline it, and each client has at most one address in quarantine: a
// new decline frees its previous one, so that a guest cycling through
// REQUEST and DECLINE cannot drain the pool.
func (db *leaseDB) decline(mac [6]byte, addr netip.Addr, now time.Time) bool {
	db.mu.Lock()
	l := db.byMAC[mac]
	if l == nil || l.addr != addr {
		db.mu.Unlock()
		return false
	}
	db.remove(l)
	for a, o := range db.byIP {
		if o.state == LeaseDeclined && o.mac == mac {
			delete(db.byIP, a)
		}
	}
	db.byIP[addr] = &lease{mac: mac, addr: addr, state: LeaseDeclined, expires: now.Add(declineHold)}
	db.gen.Add(1)
	db.mu.Unlock()
	db.changed()
	return true
}

// lookupMAC returns the address currently leased to mac.
func (db *leaseDB) lookupMAC(mac [6]byte, now time.Time) (netip.Addr, bool) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if l := db.byMAC[mac]; l != nil && l.state == LeaseBound && l.active(now) {
		return l.addr, true
	}
	return netip.Addr{}, false
}

// lookupIP returns the MAC address that addr is currently leased to.
func (db *leaseDB) lookupIP(addr netip.Addr, now time.Time) ([6]byte, bool) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if l := db.byIP[addr]; l != nil && l.state == LeaseBound && l.active(now) {
		return l.mac, true
	}
	return [6]byte{}, false
}

// lookupName returns the address of the guest that registered host name
// name (a lower-case label) and still holds its lease.
func (db *leaseDB) lookupName(name string, now time.Time) (netip.Addr, bool) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if l := db.byName[name]; l != nil && l.state == LeaseBound && l.active(now) {
		return l.addr, true
	}
	return netip.Addr{}, false
}

// nameOf returns the host name registered for addr, if its lease is current
// and the name still points at it.
func (db *leaseDB) nameOf(addr netip.Addr, now time.Time) (string, bool) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	l := db.byIP[addr]
	if l == nil || l.hostname == "" || l.state != LeaseBound || !l.active(now) || db.byName[l.hostname] != l {
		return "", false
	}
	return l.hostname, true
}

// leases returns a copy of every record, sorted by address.
func (db *leaseDB) leases() []Lease {
	db.mu.RLock()
	out := make([]Lease, 0, len(db.byIP))
	for _, l := range db.byIP {
		e := Lease{Addr: l.addr, Hostname: l.hostname, State: l.state, Expires: l.expires}
		if l.state != LeaseDeclined {
			e.MAC = net.HardwareAddr(slices.Clone(l.mac[:]))
		}
		out = append(out, e)
	}
	db.mu.RUnlock()
	slices.SortFunc(out, func(a, b Lease) int { return a.Addr.Compare(b.Addr) })
	return out
}

// sanitizeHostname turns a DHCP host name (option 12, RFC 2132 §3.14) into
// a DNS label (RFC 1123 §2.1: letters, digits, hyphens, 1 to 63
// characters, no hyphen at either end), lower case. Only the first label of
// a dotted name is used. It returns "" for names that cannot be served, and
// for the gateway's own names.
func sanitizeHostname(s string) string {
	s, _, _ = strings.Cut(s, ".")
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
		case c >= 'A' && c <= 'Z':
		default:
			return ""
		}
	}
	s = strings.ToLower(s)
	switch s {
	case nameGateway, nameHost:
		return ""
	}
	return s
}
