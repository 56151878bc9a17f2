package services

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Defaults used by NewGateway for zero Config fields.
const (
	DefaultDomain     = "arcnet.internal"
	DefaultMTU        = 1500
	DefaultLeaseTime  = time.Hour
	DefaultResolvConf = "/etc/resolv.conf"
	DefaultDNSTimeout = 2 * time.Second
)

// DefaultSubnet is the guest subnet when Config.Subnet is not set.
var DefaultSubnet = netip.MustParsePrefix("192.168.127.0/24")

// DefaultMAC is the gateway's MAC address when Config.MAC is not set: a
// locally administered unicast address (IEEE 802 U/L bit set, I/G bit clear).
var DefaultMAC = net.HardwareAddr{0x02, 0x61, 0x72, 0x63, 0x00, 0x01}

// Reservation binds a guest MAC address to a fixed IPv4 address (a static
// DHCP lease).
type Reservation struct {
	MAC  net.HardwareAddr
	Addr netip.Addr
}

// ParseReservation parses "MAC=ADDR", e.g. "52:54:00:12:34:56=192.168.127.10",
// the form of the --dhcp-reserve flag.
func ParseReservation(s string) (Reservation, error) {
	m, a, ok := strings.Cut(s, "=")
	if !ok {
		return Reservation{}, fmt.Errorf("reservation %q: want MAC=ADDR", s)
	}
	mac, err := net.ParseMAC(strings.TrimSpace(m))
	if err != nil {
		return Reservation{}, fmt.Errorf("reservation %q: %w", s, err)
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(a))
	if err != nil {
		return Reservation{}, fmt.Errorf("reservation %q: %w", s, err)
	}
	return Reservation{MAC: mac, Addr: addr}, nil
}

// Config configures a Gateway. The zero value of every field selects its
// default.
type Config struct {
	// Subnet is the guest subnet (IPv4, /8 to /30). Default DefaultSubnet.
	Subnet netip.Prefix
	// Gateway is the gateway's own address inside Subnet. Default: the
	// subnet's first host address (192.168.127.1 for the default subnet).
	Gateway netip.Addr
	// Domain is the guests' DNS domain. Default DefaultDomain.
	Domain string
	// MAC is the gateway's MAC address. Default DefaultMAC.
	MAC net.HardwareAddr
	// MTU is the guests' interface MTU, advertised with DHCP option 26 and
	// used to bound UDP DNS answers (the gateway does not fragment).
	// Default DefaultMTU; 576 to 65535.
	MTU int

	// LeaseTime is the DHCP lease duration. Default DefaultLeaseTime.
	LeaseTime time.Duration
	// PoolStart and PoolEnd bound the dynamic DHCP pool (inclusive).
	// Default: every host address of Subnet except the gateway's and
	// HostAddr.
	PoolStart, PoolEnd netip.Addr
	// Reservations are static leases; their addresses must lie in Subnet
	// (not necessarily in the pool) and are never given to another MAC.
	Reservations []Reservation
	// LeaseFile is where the lease database is kept across restarts
	// (written atomically: temporary file, fsync, rename). Empty: leases
	// live in memory only.
	LeaseFile string

	// HostAddr is the address served as host.<Domain> (the host, reached
	// through the uplink). Invalid (zero): the name does not exist.
	HostAddr netip.Addr
	// DNSUpstreams are the resolvers ("ADDR" or "ADDR:PORT") that names
	// outside Domain are forwarded to. Empty: the nameserver lines of
	// ResolvConf, re-read when that file changes.
	DNSUpstreams []string
	// ResolvConf is the resolv.conf(5) file read when DNSUpstreams is
	// empty. Default DefaultResolvConf.
	ResolvConf string
	// DNSTimeout bounds one exchange with one upstream. Default
	// DefaultDNSTimeout.
	DNSTimeout time.Duration
	// DNSCacheSize is the number of cached upstream answers. Default 4096;
	// negative disables the cache.
	DNSCacheSize int

	// Clock returns the current time (tests inject one). Default time.Now.
	Clock func() time.Time
	// Logger receives the gateway's log records. Default slog.Default().
	Logger *slog.Logger
}

// settings is a validated Config with every default applied.
type settings struct {
	subnet             netip.Prefix
	gw                 netip.Addr
	domain             string // FQDN, lower case, with the trailing dot
	mac                [6]byte
	mtu                int
	leaseTime          time.Duration
	poolStart, poolEnd netip.Addr
	reservations       map[[6]byte]netip.Addr
	reservedAddrs      map[netip.Addr][6]byte
	leaseFile          string
	hostAddr           netip.Addr
	upstreams          []string // normalised "host:port"
	resolvConf         string
	dnsTimeout         time.Duration
	cacheSize          int
	clock              func() time.Time
	log                *slog.Logger
}

func (c *Config) settings() (*settings, error) {
	s := &settings{
		subnet:     c.Subnet,
		gw:         c.Gateway,
		mtu:        c.MTU,
		leaseTime:  c.LeaseTime,
		leaseFile:  c.LeaseFile,
		hostAddr:   c.HostAddr,
		resolvConf: c.ResolvConf,
		dnsTimeout: c.DNSTimeout,
		cacheSize:  c.DNSCacheSize,
		clock:      c.Clock,
		log:        c.Logger,
	}
	if !s.subnet.IsValid() {
		s.subnet = DefaultSubnet
	}
	s.subnet = s.subnet.Masked()
	if !s.subnet.Addr().Is4() || s.subnet.Bits() < 8 || s.subnet.Bits() > 30 {
		return nil, fmt.Errorf("subnet %s: want an IPv4 prefix of length 8 to 30", s.subnet)
	}
	network, bcast := s.subnet.Addr(), lastAddr(s.subnet)
	isHost := func(a netip.Addr) bool {
		return a.Is4() && s.subnet.Contains(a) && a != network && a != bcast
	}
	if !s.gw.IsValid() {
		s.gw = network.Next()
	}
	if !isHost(s.gw) {
		return nil, fmt.Errorf("gateway %s: not a host address of %s", s.gw, s.subnet)
	}
	dom := strings.ToLower(strings.TrimSuffix(c.Domain, "."))
	if dom == "" {
		dom = DefaultDomain
	}
	if _, ok := dns.IsDomainName(dom); !ok || dns.CountLabel(dom) < 1 {
		return nil, fmt.Errorf("domain %q: not a valid DNS name", c.Domain)
	}
	s.domain = dns.Fqdn(dom)
	switch mac := c.MAC; {
	case mac == nil:
		copy(s.mac[:], DefaultMAC)
	case len(mac) != 6 || mac[0]&1 != 0:
		return nil, fmt.Errorf("gateway MAC %s: want a 6-byte unicast address", mac)
	default:
		copy(s.mac[:], mac)
	}
	if s.mtu == 0 {
		s.mtu = DefaultMTU
	}
	if s.mtu < 576 || s.mtu > 65535 {
		return nil, fmt.Errorf("mtu %d: want 576 to 65535", s.mtu)
	}
	if s.leaseTime == 0 {
		s.leaseTime = DefaultLeaseTime
	}
	if s.leaseTime < 10*time.Second || s.leaseTime > 365*24*time.Hour {
		return nil, fmt.Errorf("lease time %s: want 10s to 1 year", s.leaseTime)
	}
	if s.hostAddr.IsValid() && !s.hostAddr.Is4() {
		return nil, fmt.Errorf("host address %s: want IPv4", s.hostAddr)
	}
	s.poolStart, s.poolEnd = c.PoolStart, c.PoolEnd
	if !s.poolStart.IsValid() {
		s.poolStart = network.Next()
	}
	if !s.poolEnd.IsValid() {
		s.poolEnd = bcast.Prev()
	}
	if !isHost(s.poolStart) || !isHost(s.poolEnd) || s.poolEnd.Less(s.poolStart) {
		return nil, fmt.Errorf("dhcp pool %s-%s: not an address range inside %s", s.poolStart, s.poolEnd, s.subnet)
	}
	s.reservations = make(map[[6]byte]netip.Addr, len(c.Reservations))
	s.reservedAddrs = make(map[netip.Addr][6]byte, len(c.Reservations))
	for _, r := range c.Reservations {
		if len(r.MAC) != 6 || r.MAC[0]&1 != 0 {
			return nil, fmt.Errorf("reservation %s: want a 6-byte unicast MAC", r.MAC)
		}
		if !isHost(r.Addr) || r.Addr == s.gw || r.Addr == s.hostAddr {
			return nil, fmt.Errorf("reservation %s=%s: not a free host address of %s", r.MAC, r.Addr, s.subnet)
		}
		var m [6]byte
		copy(m[:], r.MAC)
		if _, dup := s.reservations[m]; dup {
			return nil, fmt.Errorf("reservation %s: MAC reserved twice", r.MAC)
		}
		if _, dup := s.reservedAddrs[r.Addr]; dup {
			return nil, fmt.Errorf("reservation %s: address reserved twice", r.Addr)
		}
		s.reservations[m] = r.Addr
		s.reservedAddrs[r.Addr] = m
	}
	for _, u := range c.DNSUpstreams {
		ap, err := parseUpstream(u)
		if err != nil {
			return nil, err
		}
		s.upstreams = append(s.upstreams, ap)
	}
	if s.resolvConf == "" {
		s.resolvConf = DefaultResolvConf
	}
	if s.dnsTimeout == 0 {
		s.dnsTimeout = DefaultDNSTimeout
	}
	if s.dnsTimeout < 0 {
		return nil, errors.New("dns timeout: negative")
	}
	if s.cacheSize == 0 {
		s.cacheSize = 4096
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

// parseUpstream normalises "ADDR" or "ADDR:PORT" (IPv6 in brackets when a
// port is given) to "ADDR:PORT".
func parseUpstream(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return "", fmt.Errorf("dns upstream %q: port 0", s)
		}
		return ap.String(), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return "", fmt.Errorf("dns upstream %q: want ADDR or ADDR:PORT", s)
	}
	return netip.AddrPortFrom(a, 53).String(), nil
}

// lastAddr returns the last (broadcast) address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= ^uint32(0) >> p.Bits()
	return u32Addr(v)
}

func addrU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32Addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
