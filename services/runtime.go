package services

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Changes at run time: static DHCP leases (reservations) and DNS A records
// of the guests' domain, added and removed while guests run (the control
// API of cmd/vhost-arcnet). They live in memory: the lease file keeps
// leases, not reservations or records, so a restart starts again from the
// configuration.

// ErrNotFound is wrapped by the errors of RemoveReservation and
// RemoveRecord for something that does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is wrapped by the errors of AddReservation and AddRecord
// when the change collides with what exists (a MAC or address reserved
// already, an address leased to another guest, a reserved name).
var ErrConflict = errors.New("conflict")

// MaxRecords bounds the DNS records added at run time.
const MaxRecords = 4096

// Reservations returns the static leases, sorted by address.
func (g *Gateway) Reservations() []Reservation {
	db := g.db
	db.mu.RLock()
	out := make([]Reservation, 0, len(db.res))
	for m, a := range db.res {
		out = append(out, Reservation{MAC: net.HardwareAddr(slices.Clone(m[:])), Addr: a})
	}
	db.mu.RUnlock()
	slices.SortFunc(out, func(a, b Reservation) int { return a.Addr.Compare(b.Addr) })
	return out
}

// AddReservation adds a static lease: r.MAC gets r.Addr at its next DHCP
// exchange (a guest holding another address is refused its renewal and
// starts over), and no other MAC is given r.Addr. The address must be a
// host address of the subnet other than the gateway's and the host's, not
// reserved yet, and not leased to another guest now; the MAC must not
// have a reservation yet (remove it first).
func (g *Gateway) AddReservation(r Reservation) error {
	if len(r.MAC) != 6 || r.MAC[0]&1 != 0 || [6]byte(r.MAC) == [6]byte{} {
		return fmt.Errorf("reservation %s: want a 6-byte unicast MAC such as 52:54:00:12:34:56", r.MAC)
	}
	s := g.s
	a := r.Addr
	if !a.Is4() || !s.subnet.Contains(a) || a == s.subnet.Addr() || a == lastAddr(s.subnet) {
		return fmt.Errorf("reservation %s=%s: want a host address of the guest subnet %s", r.MAC, a, s.subnet)
	}
	if a == s.gw {
		return fmt.Errorf("reservation %s=%s: %w: that is the gateway's address", r.MAC, a, ErrConflict)
	}
	if a == s.hostAddr || a == *g.dns.hostAddr.Load() {
		return fmt.Errorf("reservation %s=%s: %w: that is the host's address", r.MAC, a, ErrConflict)
	}
	mac := [6]byte(r.MAC)
	db := g.db
	now := s.clock()
	db.mu.Lock()
	defer db.mu.Unlock()
	if old, ok := db.res[mac]; ok {
		return fmt.Errorf("reservation %s=%s: %w: %s is reserved %s already (remove that reservation first)", r.MAC, a, ErrConflict, r.MAC, old)
	}
	if owner, ok := db.resAddrs[a]; ok {
		return fmt.Errorf("reservation %s=%s: %w: %s is reserved for %s already", r.MAC, a, ErrConflict, a, net.HardwareAddr(owner[:]))
	}
	if l := db.byIP[a]; l != nil && l.active(now) && (l.state == LeaseDeclined || l.mac != mac) {
		who := "a guest that declined it"
		if l.state != LeaseDeclined {
			who = net.HardwareAddr(l.mac[:]).String()
		}
		return fmt.Errorf("reservation %s=%s: %w: %s is %s by %s until %s; reserve another address or wait",
			r.MAC, a, ErrConflict, a, l.state, who, l.expires.UTC().Format(time.RFC3339))
	}
	db.res[mac] = a
	db.resAddrs[a] = mac
	return nil
}

// RemoveReservation removes mac's static lease and returns it. A lease the
// guest holds at that address stays until it ends; an address outside the
// dynamic pool is not renewed.
func (g *Gateway) RemoveReservation(mac net.HardwareAddr) (Reservation, error) {
	if len(mac) != 6 {
		return Reservation{}, fmt.Errorf("reservation %s: want a 6-byte MAC", mac)
	}
	db := g.db
	db.mu.Lock()
	defer db.mu.Unlock()
	a, ok := db.res[[6]byte(mac)]
	if !ok {
		return Reservation{}, fmt.Errorf("reservation for %s: %w", mac, ErrNotFound)
	}
	delete(db.res, [6]byte(mac))
	delete(db.resAddrs, a)
	return Reservation{MAC: slices.Clone(mac), Addr: a}, nil
}

// reservation returns mac's reserved address.
func (db *leaseDB) reservation(mac [6]byte) (netip.Addr, bool) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	a, ok := db.res[mac]
	return a, ok
}

// Record is a DNS A record of the guests' domain added at run time:
// Name.<domain> is Addr. A record wins over a DHCP client's host name of
// the same name; the reverse zone answers the record's name for Addr when
// no guest's lease names it.
type Record struct {
	Name string // one label, lower case, without the domain
	Addr netip.Addr
}

// records is the DNS server's set of run-time records, replaced whole on
// each change (copy on write): queries read it without a lock.
type records struct {
	byName map[string]netip.Addr
	byAddr map[netip.Addr]string // the smallest name of each address
}

// recordSet holds the current records; mu serialises writers.
type recordSet struct {
	mu  sync.Mutex
	cur atomic.Pointer[records]
}

func (rs *recordSet) lookup(name string) (netip.Addr, bool) {
	r := rs.cur.Load()
	if r == nil {
		return netip.Addr{}, false
	}
	a, ok := r.byName[name]
	return a, ok
}

func (rs *recordSet) nameOf(a netip.Addr) (string, bool) {
	r := rs.cur.Load()
	if r == nil {
		return "", false
	}
	n, ok := r.byAddr[a]
	return n, ok
}

// update replaces the records with fn's edit of a copy of their names.
func (rs *recordSet) update(fn func(byName map[string]netip.Addr) error) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	byName := map[string]netip.Addr{}
	if r := rs.cur.Load(); r != nil {
		byName = maps.Clone(r.byName)
	}
	if err := fn(byName); err != nil {
		return err
	}
	next := &records{byName: byName, byAddr: make(map[netip.Addr]string, len(byName))}
	for n, a := range byName {
		if o, ok := next.byAddr[a]; !ok || n < o {
			next.byAddr[a] = n
		}
	}
	rs.cur.Store(next)
	return nil
}

// recordName turns NAME, NAME.<domain> or NAME.<domain>. into the label
// NAME, lower case, or says what is wrong with it.
func (g *Gateway) recordName(name string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	dom := g.Domain()
	if l, ok := strings.CutSuffix(n, "."+dom); ok {
		n = l
	}
	switch {
	case n == "":
		return "", fmt.Errorf("DNS name %q: empty", name)
	case strings.Contains(n, "."):
		return "", fmt.Errorf("DNS name %q: want one label under %s, such as web or web.%s", name, dom, dom)
	case n == nameGateway || n == nameHost:
		return "", fmt.Errorf("DNS name %q: %w: %s.%s is the gateway's own name", name, ErrConflict, n, dom)
	case sanitizeHostname(n) != n:
		return "", fmt.Errorf("DNS name %q: want letters, digits and '-' (1..63, not at either end)", name)
	}
	return n, nil
}

// Records returns the DNS records added at run time, sorted by name.
func (g *Gateway) Records() []Record {
	r := g.dns.records.cur.Load()
	if r == nil {
		return []Record{}
	}
	out := make([]Record, 0, len(r.byName))
	for n, a := range r.byName {
		out = append(out, Record{Name: n, Addr: a})
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// AddRecord adds or replaces the A record name.<domain> -> addr (IPv4, not
// unspecified, multicast or broadcast) and returns it as stored. name is a
// label, or a label followed by the guests' domain.
func (g *Gateway) AddRecord(name string, addr netip.Addr) (Record, error) {
	n, err := g.recordName(name)
	if err != nil {
		return Record{}, err
	}
	if !addr.Is4() || addr.IsUnspecified() || addr.IsMulticast() || addr == limitedBroadcast {
		return Record{}, fmt.Errorf("DNS record %s: address %q: want a unicast IPv4 address", n, addr)
	}
	err = g.dns.records.update(func(m map[string]netip.Addr) error {
		if _, ok := m[n]; !ok && len(m) >= MaxRecords {
			return fmt.Errorf("DNS record %s: %w: %d records already (the most there can be); remove some first", n, ErrConflict, MaxRecords)
		}
		m[n] = addr
		return nil
	})
	if err != nil {
		return Record{}, err
	}
	return Record{Name: n, Addr: addr}, nil
}

// RemoveRecord removes the record name (as AddRecord takes it) and returns
// it.
func (g *Gateway) RemoveRecord(name string) (Record, error) {
	n, err := g.recordName(name)
	if err != nil {
		return Record{}, err
	}
	var r Record
	err = g.dns.records.update(func(m map[string]netip.Addr) error {
		a, ok := m[n]
		if !ok {
			return fmt.Errorf("DNS record %s.%s: %w", n, g.Domain(), ErrNotFound)
		}
		r = Record{Name: n, Addr: a}
		delete(m, n)
		return nil
	})
	return r, err
}
