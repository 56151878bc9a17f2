package services

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/internal/testclock"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

func TestDNSLocalNames(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	newClient(t, g, guestMAC1).dora(dhcpv4.WithOption(dhcpv4.OptHostName("web")))
	web, _ := g.LookupMAC(net.HardwareAddr(guestMAC1[:]))

	type want struct {
		rcode  int
		answer string // first answer's data, "" for none
		soa    bool   // SOA in the authority section
	}
	tests := []struct {
		name  string
		qtype uint16
		want  want
	}{
		{"gateway.arcnet.internal.", dns.TypeA, want{dns.RcodeSuccess, "192.168.127.1", false}},
		{"GateWay.ARCNET.internal.", dns.TypeA, want{dns.RcodeSuccess, "192.168.127.1", false}},
		{"gateway.arcnet.internal.", dns.TypeAAAA, want{dns.RcodeSuccess, "", true}},
		{"gateway.arcnet.internal.", dns.TypeANY, want{dns.RcodeSuccess, "192.168.127.1", false}},
		{"web.arcnet.internal.", dns.TypeA, want{dns.RcodeSuccess, web.String(), false}},
		{"host.arcnet.internal.", dns.TypeA, want{dns.RcodeNameError, "", true}},
		{"nobody.arcnet.internal.", dns.TypeA, want{dns.RcodeNameError, "", true}},
		{"www.example.com.arcnet.internal.", dns.TypeA, want{dns.RcodeNameError, "", true}},
		{"arcnet.internal.", dns.TypeSOA, want{dns.RcodeSuccess, "gateway.arcnet.internal.", false}},
		{"arcnet.internal.", dns.TypeNS, want{dns.RcodeSuccess, "gateway.arcnet.internal.", false}},
		{"arcnet.internal.", dns.TypeA, want{dns.RcodeSuccess, "", true}},
		{"1.127.168.192.in-addr.arpa.", dns.TypePTR, want{dns.RcodeSuccess, "gateway.arcnet.internal.", false}},
		{reverseName(web), dns.TypePTR, want{dns.RcodeSuccess, "web.arcnet.internal.", false}},
		{"99.127.168.192.in-addr.arpa.", dns.TypePTR, want{dns.RcodeNameError, "", true}},
		{"1.127.168.192.in-addr.arpa.", dns.TypeA, want{dns.RcodeSuccess, "", true}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%s", tc.name, dns.TypeToString[tc.qtype]), func(t *testing.T) {
			for _, udp := range []bool{true, false} {
				r := ask(t, g, question(tc.name, tc.qtype), udp)
				require.Equal(t, tc.want.rcode, r.Rcode)
				require.True(t, r.Authoritative)
				require.Equal(t, tc.name, r.Question[0].Name, "question echoed with its case")
				if tc.want.answer == "" {
					require.Empty(t, r.Answer)
				} else {
					require.NotEmpty(t, r.Answer)
					require.Equal(t, tc.name, r.Answer[0].Header().Name)
					switch rr := r.Answer[0].(type) {
					case *dns.A:
						require.Equal(t, tc.want.answer, rr.A.String())
					case *dns.PTR:
						require.Equal(t, tc.want.answer, rr.Ptr)
					case *dns.SOA:
						require.Equal(t, tc.want.answer, rr.Ns)
					case *dns.NS:
						require.Equal(t, tc.want.answer, rr.Ns)
					default:
						t.Fatalf("answer %v", rr)
					}
				}
				if tc.want.soa {
					require.Len(t, r.Ns, 1)
					require.Equal(t, uint32(localTTL), r.Ns[0].(*dns.SOA).Minttl)
				}
			}
		})
	}

	// host.<domain> once an uplink gives it an address.
	require.NoError(t, g.SetHostAddr(netip.MustParseAddr("192.168.127.254")))
	r := ask(t, g, question("host.arcnet.internal.", dns.TypeA), true)
	require.Equal(t, "192.168.127.254", r.Answer[0].(*dns.A).A.String())
	r = ask(t, g, question("254.127.168.192.in-addr.arpa.", dns.TypePTR), true)
	require.Equal(t, "host.arcnet.internal.", r.Answer[0].(*dns.PTR).Ptr)
	require.Error(t, g.SetHostAddr(netip.MustParseAddr("::1")))
	require.Zero(t, g.Stats().Get(DNSForwarded), "local names never leave the gateway")
}

func reverseName(a netip.Addr) string {
	n, _ := dns.ReverseAddr(a.String())
	return n
}

func TestDNSHostnameConflictLatestWins(t *testing.T) {
	g, clk := newTestGateway(t, nil)
	a := newClient(t, g, guestMAC1).dora(dhcpv4.WithOption(dhcpv4.OptHostName("twin")))
	clk.Advance(time.Second)
	b := newClient(t, g, guestMAC2).dora(dhcpv4.WithOption(dhcpv4.OptHostName("twin")))
	r := ask(t, g, question("twin.arcnet.internal.", dns.TypeA), true)
	require.Equal(t, b.String(), r.Answer[0].(*dns.A).A.String())
	r = ask(t, g, question(reverseName(a), dns.TypePTR), true)
	require.Equal(t, dns.RcodeNameError, r.Rcode, "the loser's PTR no longer claims the name")
	// Expired leases lose their names.
	clk.Advance(DefaultLeaseTime)
	r = ask(t, g, question("twin.arcnet.internal.", dns.TypeA), true)
	require.Equal(t, dns.RcodeNameError, r.Rcode)
}

func TestDNSForwarding(t *testing.T) {
	up := startUpstream(t, func(r *dns.Msg, tcp bool) *dns.Msg {
		if r.Question[0].Name == "nx.example." {
			m := new(dns.Msg)
			m.SetRcode(r, dns.RcodeNameError)
			m.Ns = append(m.Ns, &dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 600}, Ns: "ns.example.", Mbox: "h.example.", Minttl: 100})
			return m
		}
		return aAnswer(r, "203.0.113.7", 300)
	})
	g, _ := newTestGateway(t, func(c *Config) { c.DNSUpstreams = []string{up.addr} })

	q := question("www.example.", dns.TypeA)
	q.SetEdns0(4096, true)
	r := ask(t, g, q, true)
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Equal(t, "203.0.113.7", r.Answer[0].(*dns.A).A.String())
	require.True(t, r.RecursionAvailable)
	require.NotNil(t, r.IsEdns0(), "EDNS client gets an OPT record")
	require.True(t, r.IsEdns0().Do())
	require.Equal(t, int32(1), up.udpCount.Load())

	// Without EDNS there is no OPT in the answer (RFC 6891 §7).
	r = ask(t, g, question("other.example.", dns.TypeA), true)
	require.Nil(t, r.IsEdns0())

	r = ask(t, g, question("nx.example.", dns.TypeA), false)
	require.Equal(t, dns.RcodeNameError, r.Rcode)
	require.False(t, r.Authoritative)
	require.Equal(t, uint64(3), g.Stats().Get(DNSForwarded))

	// Private reverse lookups for our subnet are answered locally; others
	// are forwarded.
	r = ask(t, g, question("4.3.2.1.in-addr.arpa.", dns.TypePTR), true)
	require.Equal(t, uint64(4), g.Stats().Get(DNSForwarded))
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
}

func TestDNSCacheHonoursTTL(t *testing.T) {
	var ttl atomic.Uint32
	ttl.Store(30)
	up := startUpstream(t, func(r *dns.Msg, tcp bool) *dns.Msg {
		switch r.Question[0].Name {
		case "empty.example.":
			m := new(dns.Msg)
			m.SetReply(r)
			m.Ns = append(m.Ns, &dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 600}, Ns: "ns.example.", Mbox: "h.example.", Minttl: 20})
			return m
		case "nosoa.example.":
			m := new(dns.Msg)
			m.SetRcode(r, dns.RcodeNameError)
			return m
		}
		return aAnswer(r, "203.0.113.8", ttl.Load())
	})
	g, clk := newTestGateway(t, func(c *Config) { c.DNSUpstreams = []string{up.addr} })

	r := ask(t, g, question("c.example.", dns.TypeA), true)
	require.Equal(t, uint32(30), r.Answer[0].Header().Ttl)
	clk.Advance(10 * time.Second)
	r = ask(t, g, question("C.Example.", dns.TypeA), true) // case-insensitive key
	require.Equal(t, int32(1), up.udpCount.Load(), "served from cache")
	require.Equal(t, uint32(20), r.Answer[0].Header().Ttl, "TTL decremented by the time in cache")
	require.Equal(t, "C.Example.", r.Question[0].Name)
	require.Equal(t, uint64(1), g.Stats().Get(DNSCacheHits))

	clk.Advance(20 * time.Second) // now exactly at expiry
	ask(t, g, question("c.example.", dns.TypeA), true)
	require.Equal(t, int32(2), up.udpCount.Load(), "expired entry refetched")

	// Negative answers live for min(SOA TTL, MINIMUM) (RFC 2308 §5).
	ask(t, g, question("empty.example.", dns.TypeA), true)
	clk.Advance(19 * time.Second)
	ask(t, g, question("empty.example.", dns.TypeA), true)
	require.Equal(t, int32(3), up.udpCount.Load())
	clk.Advance(time.Second)
	ask(t, g, question("empty.example.", dns.TypeA), true)
	require.Equal(t, int32(4), up.udpCount.Load())

	// Negative answers without SOA and zero TTLs are not cached.
	ask(t, g, question("nosoa.example.", dns.TypeA), true)
	ask(t, g, question("nosoa.example.", dns.TypeA), true)
	require.Equal(t, int32(6), up.udpCount.Load())
	ttl.Store(0)
	ask(t, g, question("zero.example.", dns.TypeA), true)
	ask(t, g, question("zero.example.", dns.TypeA), true)
	require.Equal(t, int32(8), up.udpCount.Load())
}

func TestDNSCacheEviction(t *testing.T) {
	c := newDNSCache(4)
	now := time.Unix(1000, 0)
	for i := range 10 {
		m := aAnswer(question(fmt.Sprintf("n%d.example.", i), dns.TypeA), "192.0.2.1", 60)
		c.put(keyOf(m), m, now)
		require.LessOrEqual(t, len(c.m), 4)
	}
}

func TestDNSTruncationRetriesOverTCP(t *testing.T) {
	up := startUpstream(t, func(r *dns.Msg, tcp bool) *dns.Msg {
		if !tcp {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Truncated = true
			return m
		}
		m := aAnswer(r, "203.0.113.9", 60)
		for i := range 40 {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{fmt.Sprintf("record %02d padding padding padding padding padding padding", i)}})
		}
		return m
	})
	g, _ := newTestGateway(t, func(c *Config) { c.DNSUpstreams = []string{up.addr} })

	// Over TCP from the guest: the whole answer.
	r := ask(t, g, question("big.example.", dns.TypeANY), false)
	require.Equal(t, int32(1), up.udpCount.Load())
	require.Equal(t, int32(1), up.tcpCount.Load())
	require.Equal(t, uint64(1), g.Stats().Get(DNSTCPRetries))
	require.Len(t, r.Answer, 41)
	require.False(t, r.Truncated)

	// Over UDP without EDNS: truncated to 512 bytes with TC set, so the
	// guest retries over TCP (from the cache now).
	q := question("big.example.", dns.TypeANY)
	b, _ := q.Pack()
	var got []byte
	require.True(t, g.dns.query(b, true, func(p []byte) { got = append([]byte(nil), p...) }))
	require.LessOrEqual(t, len(got), 512)
	r = new(dns.Msg)
	require.NoError(t, r.Unpack(got))
	require.True(t, r.Truncated)
	require.Equal(t, uint64(1), g.Stats().Get(DNSTruncated))
}

func TestDNSUpstreamFailure(t *testing.T) {
	failing := startUpstream(t, func(r *dns.Msg, tcp bool) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		return m
	})
	// A closed port on loopback: the exchange fails at once (ICMP port
	// unreachable on the connected UDP socket).
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := pc.LocalAddr().String()
	pc.Close()

	g, _ := newTestGateway(t, func(c *Config) { c.DNSUpstreams = []string{failing.addr, closed} })
	q := question("fail.example.", dns.TypeA)
	q.SetEdns0(1232, false)
	r := ask(t, g, q, true)
	require.Equal(t, dns.RcodeServerFailure, r.Rcode)
	opt := r.IsEdns0()
	require.NotNil(t, opt)
	require.Len(t, opt.Option, 1)
	require.Equal(t, dns.ExtendedErrorCodeNetworkError, opt.Option[0].(*dns.EDNS0_EDE).InfoCode)
	require.Equal(t, uint64(2), g.Stats().Get(DNSUpstreamErrs))
	require.Equal(t, uint64(1), g.Stats().Get(DNSServFail))
	// SERVFAIL is not cached.
	ask(t, g, question("fail.example.", dns.TypeA), true)
	require.Equal(t, int32(2), failing.udpCount.Load())

	// The next upstream is tried when the first fails.
	good := startUpstream(t, func(r *dns.Msg, tcp bool) *dns.Msg { return aAnswer(r, "198.51.100.1", 60) })
	g2, _ := newTestGateway(t, func(c *Config) { c.DNSUpstreams = []string{closed, failing.addr, good.addr} })
	r = ask(t, g2, question("ok.example.", dns.TypeA), true)
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Equal(t, "198.51.100.1", r.Answer[0].(*dns.A).A.String())

	// An upstream that answers another question is not believed.
	liar := startUpstream(t, func(r *dns.Msg, tcp bool) *dns.Msg {
		m := aAnswer(r, "6.6.6.6", 60)
		m.Question[0].Name = "evil.example."
		return m
	})
	g3, _ := newTestGateway(t, func(c *Config) { c.DNSUpstreams = []string{liar.addr} })
	r = ask(t, g3, question("bank.example.", dns.TypeA), true)
	require.Equal(t, dns.RcodeServerFailure, r.Rcode)
}

func TestDNSNoUpstreams(t *testing.T) {
	g, _ := newTestGateway(t, func(c *Config) {
		c.DNSUpstreams = nil
		c.ResolvConf = filepath.Join(t.TempDir(), "missing")
	})
	r := ask(t, g, question("x.example.", dns.TypeA), true)
	require.Equal(t, dns.RcodeServerFailure, r.Rcode)
}

func TestResolvConfReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	require.NoError(t, os.WriteFile(path, []byte("# test\nnameserver 127.0.0.1\nnameserver ::1\nsearch x\n"), 0o644))
	clk := testclock.New(testEpoch)
	s, err := (&Config{ResolvConf: path, Clock: clk.Now, Logger: quietLog}).settings()
	require.NoError(t, err)
	u := newUpstreams(s)
	require.Equal(t, []string{"127.0.0.1:53", "[::1]:53"}, u.get(""))

	// Replaced (new inode, like resolvconf and systemd do).
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte("nameserver 127.0.0.2\n"), 0o644))
	require.NoError(t, os.Rename(tmp, path))
	require.Equal(t, []string{"127.0.0.1:53", "[::1]:53"}, u.get(""), "not re-checked within a second")
	clk.Advance(resolvConfCheck)
	require.Equal(t, []string{"127.0.0.2:53"}, u.get(""))

	require.NoError(t, os.Remove(path))
	clk.Advance(resolvConfCheck)
	require.Empty(t, u.get(""))
	require.NoError(t, os.WriteFile(path, []byte("nameserver 127.0.0.3\n"), 0o644))
	clk.Advance(resolvConfCheck)
	require.Equal(t, []string{"127.0.0.3:53"}, u.get(""))
}

func TestDNSUpstreamConfig(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":       "127.0.0.1:53",
		"127.0.0.1:5353":  "127.0.0.1:5353",
		"::1":             "[::1]:53",
		"[::1]":           "[::1]:53",
		"[::1]:5353":      "[::1]:5353",
		"fe80::1%eth0":    "[fe80::1%eth0]:53",
		"not-an-address":  "",
		"127.0.0.1:0":     "",
		"127.0.0.1:99999": "",
	} {
		got, err := parseUpstream(in)
		if want == "" {
			require.Error(t, err, in)
			continue
		}
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
}

func TestDNSMalformed(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	call := func(b []byte) (answered bool, r *dns.Msg, raw []byte) {
		ok := g.dns.query(b, true, func(p []byte) { raw = append([]byte(nil), p...) })
		if raw != nil {
			r = new(dns.Msg)
			require.NoError(t, r.Unpack(raw))
		}
		return ok, r, raw
	}
	// Too short for a header: dropped.
	ok, _, _ := call([]byte{1, 2, 3})
	require.False(t, ok)
	require.Equal(t, uint64(1), g.Stats().Drops(DropDNSMalformed))

	// A header and garbage: FORMERR with the ID and RD echoed.
	ok, r, _ := call([]byte{0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0xff})
	require.True(t, ok)
	require.Equal(t, uint16(0xabcd), r.Id)
	require.Equal(t, dns.RcodeFormatError, r.Rcode)
	require.True(t, r.RecursionDesired)

	// Responses are dropped (no reflection loops).
	m := question("gateway.arcnet.internal.", dns.TypeA)
	m.Response = true
	b, _ := m.Pack()
	ok, _, _ = call(b)
	require.False(t, ok)
	require.Equal(t, uint64(1), g.Stats().Drops(DropDNSResponse))

	// Two questions: FORMERR (RFC 9619).
	m = question("gateway.arcnet.internal.", dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	b, _ = m.Pack()
	_, r, _ = call(b)
	require.Equal(t, dns.RcodeFormatError, r.Rcode)

	// No question: FORMERR.
	m = new(dns.Msg)
	m.Id = 5
	b, _ = m.Pack()
	_, r, _ = call(b)
	require.Equal(t, dns.RcodeFormatError, r.Rcode)

	// NOTIFY and UPDATE: NOTIMP.
	m = question("arcnet.internal.", dns.TypeSOA)
	m.Opcode = dns.OpcodeUpdate
	b, _ = m.Pack()
	_, r, _ = call(b)
	require.Equal(t, dns.RcodeNotImplemented, r.Rcode)

	// Zone transfers and other classes: REFUSED.
	_, r, _ = call(mustPack(question("arcnet.internal.", dns.TypeAXFR)))
	require.Equal(t, dns.RcodeRefused, r.Rcode)
	m = question("version.bind.", dns.TypeTXT)
	m.Question[0].Qclass = dns.ClassCHAOS
	_, r, _ = call(mustPack(m))
	require.Equal(t, dns.RcodeRefused, r.Rcode)

	// EDNS version 1: BADVERS (RFC 6891 §6.1.3).
	m = question("gateway.arcnet.internal.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	_, r, _ = call(mustPack(m))
	require.Equal(t, dns.RcodeBadVers, r.Rcode)
}

func mustPack(m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

func TestDNSOverUDPFrames(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	out := newFrames()
	src := netip.MustParseAddr("192.168.127.50")
	q := question("gateway.arcnet.internal.", dns.TypeA)
	g.HandleFrame(udpFrame(guestMAC1, testGWMAC, src, testGW, 40000, 53, mustPack(q)), out.reply)
	p := parseUDPFrame(t, out.next(t))
	require.Equal(t, guestMAC1, p.dstMAC)
	require.Equal(t, testGWMAC, p.srcMAC)
	require.Equal(t, testGW, p.src)
	require.Equal(t, src, p.dst)
	require.Equal(t, uint16(53), p.sport)
	require.Equal(t, uint16(40000), p.dport)
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(p.payload))
	require.Equal(t, "192.168.127.1", r.Answer[0].(*dns.A).A.String())

	// A forwarded answer arrives later, from another goroutine.
	up := startUpstream(t, func(r *dns.Msg, tcp bool) *dns.Msg { return aAnswer(r, "192.0.2.33", 60) })
	g2, _ := newTestGateway(t, func(c *Config) { c.DNSUpstreams = []string{up.addr} })
	g2.HandleFrame(udpFrame(guestMAC1, testGWMAC, src, testGW, 40001, 53, mustPack(question("far.example.", dns.TypeA))), out.reply)
	p = parseUDPFrame(t, out.next(t))
	require.Equal(t, uint16(40001), p.dport)
	require.NoError(t, r.Unpack(p.payload))
	require.Equal(t, "192.0.2.33", r.Answer[0].(*dns.A).A.String())
}

func TestDNSCoalescesInflight(t *testing.T) {
	release := make(chan struct{})
	up := startUpstream(t, func(r *dns.Msg, tcp bool) *dns.Msg {
		<-release
		return aAnswer(r, "192.0.2.44", 60)
	})
	g, _ := newTestGateway(t, func(c *Config) { c.DNSUpstreams = []string{up.addr} })
	got := make(chan []byte, 3)
	for i := range 3 {
		q := question("same.example.", dns.TypeA)
		q.Id = uint16(100 + i)
		require.True(t, g.dns.query(mustPack(q), true, func(p []byte) { got <- p }))
	}
	close(release)
	ids := map[uint16]bool{}
	for range 3 {
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(<-got))
		ids[r.Id] = true
		require.Equal(t, "192.0.2.44", r.Answer[0].(*dns.A).A.String())
	}
	require.Len(t, ids, 3)
	require.Equal(t, int32(1), up.udpCount.Load())
}

func TestParseReverse(t *testing.T) {
	for in, want := range map[string]string{
		"1.127.168.192.in-addr.arpa.":   "192.168.127.1",
		"255.0.0.10.in-addr.arpa.":      "10.0.0.255",
		"01.127.168.192.in-addr.arpa.":  "",
		"256.127.168.192.in-addr.arpa.": "",
		"127.168.192.in-addr.arpa.":     "",
		"1.1.127.168.192.in-addr.arpa.": "",
		"a.127.168.192.in-addr.arpa.":   "",
		"1.127.168.192.ip6.arpa.":       "",
	} {
		a, ok := parseReverse(in)
		if want == "" {
			require.False(t, ok, in)
			continue
		}
		require.True(t, ok, in)
		require.Equal(t, want, a.String())
	}
	require.Equal(t, "127.168.192.in-addr.arpa.", reverseZone(netip.MustParsePrefix("192.168.127.0/24")))
	require.Equal(t, "168.192.in-addr.arpa.", reverseZone(netip.MustParsePrefix("192.168.0.0/20")))
}
