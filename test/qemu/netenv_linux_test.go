//go:build linux

package qemu

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/test/backend"
)

// Helpers of the guest-network scenarios (network_linux_test.go) and the
// demo (demo_linux_test.go): a DNS server in the test process that plays
// the host's upstream resolver on loopback, a vhost-arcnet on the default
// network (--uplink none) that forwards only to it, and the gateway's
// counters.

// Guest network defaults of vhost-arcnet (cmd/vhost-arcnet flags).
const (
	netGateway = "192.168.127.1"
	// netMaskBits is udhcpc's $mask for option 1 (255.255.255.0): a
	// prefix length.
	netMaskBits = "24"
	netDomain   = "arcnet.internal"
)

var netSubnet = netip.MustParsePrefix("192.168.127.0/24")

// upstreamDNS is an authoritative DNS server on 127.0.0.1 (UDP and TCP on
// the same ephemeral port) run by the test: vhost-arcnet gets it with
// --dns-upstream, so that no query leaves the machine.
type upstreamDNS struct {
	Addr string // 127.0.0.1:PORT

	zone    map[string]netip.Addr // FQDN, lower case -> A record
	tcpOnly map[string]bool       // names answered only over TCP (TC=1 over UDP)

	mu      sync.Mutex
	queries []upstreamQuery
}

// upstreamQuery is one question the upstream server was asked.
type upstreamQuery struct {
	Net  string // "udp" or "tcp"
	Type string // "A", "AAAA", ...
	Name string // FQDN, lower case
}

func (q upstreamQuery) String() string { return q.Net + " " + q.Type + " " + q.Name }

// upstreamTTL is the TTL of the upstream's answers: long enough that the
// gateway's cache holds them for the whole test.
const upstreamTTL = 300

// startUpstreamDNS serves zone (name -> IPv4 address; other types of these
// names: an empty NOERROR answer; other names: NXDOMAIN). Names in tcpOnly
// are answered with TC=1 and no records over UDP, in full over TCP. The
// server stops when the test ends.
func startUpstreamDNS(t *testing.T, zone map[string]string, tcpOnly ...string) *upstreamDNS {
	t.Helper()
	return startUpstreamDNSOn(t, listenUDPTCP, zone, tcpOnly...)
}

// startUpstreamDNSOn is startUpstreamDNS on the sockets listen opens (for
// example on 127.0.0.1 inside a network namespace).
func startUpstreamDNSOn(t *testing.T, listen func() (net.PacketConn, net.Listener, error),
	zone map[string]string, tcpOnly ...string) *upstreamDNS {
	t.Helper()
	u := &upstreamDNS{zone: map[string]netip.Addr{}, tcpOnly: map[string]bool{}}
	for name, a := range zone {
		u.zone[dns.CanonicalName(name)] = netip.MustParseAddr(a)
	}
	for _, name := range tcpOnly {
		u.tcpOnly[dns.CanonicalName(name)] = true
	}
	pc, l, err := listen()
	require.NoError(t, err)
	u.Addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(u.serve)}
	tcp := &dns.Server{Listener: l, Handler: dns.HandlerFunc(u.serve)}
	var started sync.WaitGroup
	started.Add(2)
	udp.NotifyStartedFunc, tcp.NotifyStartedFunc = started.Done, started.Done
	errs := make(chan error, 2)
	go func() { errs <- udp.ActivateAndServe() }()
	go func() { errs <- tcp.ActivateAndServe() }()
	started.Wait()
	t.Cleanup(func() {
		require.NoError(t, udp.Shutdown())
		require.NoError(t, tcp.Shutdown())
		for range 2 {
			<-errs
		}
	})
	return u
}

// listenUDPTCP opens UDP and TCP sockets on the same ephemeral port of
// 127.0.0.1 (a DNS server answers on both).
func listenUDPTCP() (net.PacketConn, net.Listener, error) {
	var last error
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		l, err := net.Listen("tcp4", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		last = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, nil, fmt.Errorf("udp+tcp on one loopback port: %w", last)
}

func (u *upstreamDNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	network := w.LocalAddr().Network()
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	u.mu.Lock()
	u.queries = append(u.queries, upstreamQuery{Net: network, Type: dns.TypeToString[q.Qtype], Name: name})
	u.mu.Unlock()
	a, ok := u.zone[name]
	switch {
	case !ok:
		m.Rcode = dns.RcodeNameError
	case u.tcpOnly[name] && network == "udp":
		m.Truncated = true
	case q.Qtype == dns.TypeA && q.Qclass == dns.ClassINET:
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: upstreamTTL},
			A:   a.AsSlice(),
		})
	}
	_ = w.WriteMsg(m)
}

// Queries returns the questions asked so far.
func (u *upstreamDNS) Queries() []upstreamQuery {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamQuery(nil), u.queries...)
}

// Count returns how many questions of this transport ("" for any), type
// and name were asked.
func (u *upstreamDNS) Count(network, typ, name string) int {
	n := 0
	for _, q := range u.Queries() {
		if (network == "" || q.Net == network) && q.Type == typ && q.Name == dns.CanonicalName(name) {
			n++
		}
	}
	return n
}

// AskedAbout reports whether any question was about name.
func (u *upstreamDNS) AskedAbout(name string) bool {
	for _, q := range u.Queries() {
		if q.Name == dns.CanonicalName(name) {
			return true
		}
	}
	return false
}

// StartNetBackend starts vhost-arcnet on the default guest network
// (--uplink none: switch, gateway with ARP, ICMP, DHCP and DNS) with up as
// its only DNS upstream, plus args.
func (e *Env) StartNetBackend(name string, up *upstreamDNS, args ...string) *Backend {
	e.t.Helper()
	return e.StartBackend(name, append([]string{"--uplink", "none", "--dns-upstream", up.Addr}, args...)...)
}

// startNetwork prepares a test of guests guests on the default guest
// network: NewEnv, an upstream DNS server that answers zone (the names in
// tcpOnly over TCP only), and vhost-arcnet "net" (StartNetBackend) on the
// environment's vu.sock with args.
func startNetwork(t *testing.T, guests int, zone map[string]string, tcpOnly []string, args ...string) (
	env *Env, up *upstreamDNS, be *Backend, sock string) {
	t.Helper()
	env = NewEnv(t, guests)
	up = startUpstreamDNS(t, zone, tcpOnly...)
	sock = env.Path("vu.sock")
	be = env.StartNetBackend("net", up, append([]string{"--socket", sock}, args...)...)
	return env, up, be, sock
}

// netStats is what one SIGUSR1 makes a backend on the guest network print:
// a msg="port stats" record per port (guest ports and "gateway") and the
// gateway's msg="gateway stats" record, which comes last.
type netStats struct {
	Ports   map[string]PortStats
	Gateway map[string]uint64 // counters (dhcp_acks, ...) and drop_<reason>
}

// NetStats asks for the counters (SIGUSR1) and returns them.
func (b *Backend) NetStats() (netStats, error) {
	c, err := b.Counters(5 * time.Second)
	if err != nil {
		return netStats{}, err
	}
	st := netStats{Ports: map[string]PortStats{}, Gateway: map[string]uint64{}}
	for _, r := range c.Ports {
		s, err := backend.ParsePortStats(r)
		if err != nil {
			return st, err
		}
		st.Ports[s.Port] = s
	}
	for k := range c.Gateway {
		if v, ok := c.Gateway.Uint(k); ok {
			st.Gateway[k] = v
		}
	}
	return st, nil
}

// WaitNetStats asks for the counters every 250 ms until ok accepts them and
// returns the last ones (with an error at timeout).
func (b *Backend) WaitNetStats(ok func(netStats) bool, timeout time.Duration) (netStats, error) {
	return waitCounters(b, b.NetStats, ok, timeout)
}

// WaitPortAttached waits for the msg="guest port attached" record of port
// (guest0, guest1, ... in connection order).
func (b *Backend) WaitPortAttached(port string, timeout time.Duration) error {
	_, _, err := b.WaitRecord(func(r LogRecord) bool {
		return r.Msg() == "guest port attached" && r.String("port") == port
	}, 0, timeout)
	return err
}

// requireLease checks the guest's GUEST-IP record (what udhcpc received
// and /init applied) against the guest network's DHCP options and returns
// the leased address.
func requireLease(t *testing.T, c *Console, mtu, leaseSeconds string) netip.Addr {
	t.Helper()
	r, ok := c.First("IP")
	require.True(t, ok, "no GUEST-IP: %s", c.Result())
	ip, err := netip.ParseAddr(r.Get("ip"))
	require.NoError(t, err, "GUEST-IP %s", r)
	require.True(t, netSubnet.Contains(ip), "leased %s outside %s", ip, netSubnet)
	require.NotEqual(t, netGateway, ip.String(), "leased the gateway's address")
	require.NotEqual(t, netSubnet.Addr(), ip, "leased the network address")
	require.NotEqual(t, "192.168.127.255", ip.String(), "leased the broadcast address")
	require.Equal(t, netMaskBits, r.Get("mask"), "subnet mask (option 1)")
	require.Equal(t, netGateway, r.Get("gw"), "router (option 3)")
	require.Equal(t, netGateway, r.Get("dns"), "DNS server (option 6)")
	require.Equal(t, netDomain, r.Get("domain"), "domain name (option 15)")
	require.Equal(t, netDomain, r.Get("search"), "domain search (option 119)")
	require.Equal(t, mtu, r.Get("mtu"), "interface MTU (option 26)")
	require.Equal(t, leaseSeconds, r.Get("lease"), "lease time (option 51)")
	require.Equal(t, netGateway, r.Get("server"), "server identifier (option 54)")
	return ip
}

// guestIP returns the address of the guest's first GUEST-IP record.
func guestIP(t *testing.T, g *Guest) string {
	t.Helper()
	r, ok := g.Console().First("IP")
	require.True(t, ok, "guest %s printed no GUEST-IP", g.Name)
	return r.Get("ip")
}

// requirePingOK checks the GUEST-PING record of target (the last one) got
// every reply.
func requirePingOK(t *testing.T, c *Console, target string) Record {
	t.Helper()
	for i := len(c.Records) - 1; i >= 0; i-- {
		r := c.Records[i]
		if r.Tag == "PING" && r.Get("target") == target {
			sent, err := r.Uint("sent")
			require.NoError(t, err)
			received, err := r.Uint("received")
			require.NoError(t, err)
			require.NotZero(t, sent, "%s", r)
			require.Equal(t, sent, received, "lost pings: %s", r)
			return r
		}
	}
	t.Fatalf("no GUEST-PING target=%s", target)
	return Record{}
}

// requireResolved checks that the guest resolved name to want.
func requireResolved(t *testing.T, c *Console, name, want string) {
	t.Helper()
	for _, r := range c.All("DNS") {
		if r.Get("name") == name {
			require.Contains(t, strings.Split(r.Get("addrs"), ","), want, "%s", r)
			return
		}
	}
	t.Fatalf("no GUEST-DNS name=%s", name)
}
