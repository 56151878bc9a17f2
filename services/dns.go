package services

import (
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Reserved labels of the local zone.
const (
	nameGateway = "gateway"
	nameHost    = "host"
)

// localTTL is the TTL of local records and the SOA minimum (negative
// caching, RFC 2308 §5). Short, because leases move.
const localTTL = 60

// udpHeaders is the IPv4 + UDP header overhead of a UDP DNS answer.
const udpHeaders = 20 + 8

// dnsServer answers DNS queries on the gateway address: names in the local
// domain and the subnet's reverse zone from the lease database, everything
// else through the forwarder. It is transport-free: query takes the wire
// bytes of one message and calls back with the wire bytes of the answer.
type dnsServer struct {
	s     *settings
	db    *leaseDB
	stats *Stats
	fwd   *forwarder

	hostAddr atomic.Pointer[netip.Addr]
	records  recordSet // added at run time (runtime.go)
	soa      *dns.SOA
	ns       *dns.NS
}

func newDNSServer(s *settings, db *leaseDB, stats *Stats, fwd *forwarder) *dnsServer {
	d := &dnsServer{s: s, db: db, stats: stats, fwd: fwd}
	d.setHostAddr(s.hostAddr)
	d.soa = &dns.SOA{
		Hdr:     dns.RR_Header{Name: s.domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: localTTL},
		Ns:      nameGateway + "." + s.domain,
		Mbox:    "hostmaster." + s.domain,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  localTTL,
	}
	d.ns = &dns.NS{Hdr: dns.RR_Header{Name: s.domain, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: localTTL}, Ns: nameGateway + "." + s.domain}
	return d
}

func (d *dnsServer) setHostAddr(a netip.Addr) {
	d.hostAddr.Store(&a)
}

// query answers one DNS message b. udp selects the UDP rules: answers are
// truncated (TC set) to the client's EDNS0 payload size or 512 bytes
// (RFC 1035 §4.2.1, RFC 6891 §6.2.5), and never beyond the MTU since the
// gateway does not fragment. answer is called at most once, with the
// packed answer, synchronously or later from a forwarder goroutine. query
// reports whether answer was or will be called: false for messages that are
// dropped. b is not used after query returns.
func (d *dnsServer) query(b []byte, udp bool, answer func([]byte)) bool {
	if len(b) < 12 {
		d.stats.drop(DropDNSMalformed)
		return false
	}
	if b[2]&0x80 != 0 {
		// A response: answering it could loop between two servers.
		d.stats.drop(DropDNSResponse)
		return false
	}
	d.stats.inc(DNSQueries)
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		d.formErr(b, answer)
		return true
	}
	maxSize := dns.MaxMsgSize
	if udp {
		maxSize = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			maxSize = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
		maxSize = min(maxSize, d.s.mtu-udpHeaders)
	}
	resp, ok := d.resolve(req, func(resp *dns.Msg) {
		answer(d.pack(req, resp, udp, maxSize))
	})
	if resp != nil {
		answer(d.pack(req, resp, udp, maxSize))
	}
	return ok
}

// resolve returns the answer to req, or nil when it comes later through
// later (a forwarded query); ok is false when no answer will come (the
// forwarder dropped the query).
func (d *dnsServer) resolve(req *dns.Msg, later func(*dns.Msg)) (resp *dns.Msg, ok bool) {
	if req.Opcode != dns.OpcodeQuery {
		// RFC 1035 §4.1.1: NOTIMP for kinds of query we do not support.
		d.stats.inc(DNSNotImp)
		return rcodeReply(req, dns.RcodeNotImplemented), true
	}
	if len(req.Question) != 1 || len(req.Answer) != 0 || len(req.Ns) != 0 {
		// RFC 9619 §1: a QUERY carries exactly one question.
		d.stats.inc(DNSFormErr)
		return rcodeReply(req, dns.RcodeFormatError), true
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		// RFC 6891 §6.1.3: unknown EDNS version.
		return rcodeReply(req, dns.RcodeBadVers), true
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET {
		return rcodeReply(req, dns.RcodeRefused), true
	}
	switch q.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeMAILA, dns.TypeMAILB:
		return rcodeReply(req, dns.RcodeRefused), true
	}
	name := strings.ToLower(q.Name)
	if dns.IsSubDomain(d.s.domain, name) {
		return d.local(req, name), true
	}
	if a, ok := parseReverse(name); ok && d.s.subnet.Contains(a) {
		return d.reverse(req, a), true
	}
	if d.fwd == nil {
		return d.servFail(req), true
	}
	ok = d.fwd.resolve(req, func(resp *dns.Msg) {
		if resp == nil {
			resp = d.servFail(req)
		}
		later(resp)
	})
	return nil, ok
}

// local answers a name inside the local domain. The server is authoritative
// for it: unknown names are NXDOMAIN, never forwarded (a guest's resolver
// tries "www.example.com.<domain>" first when the search list applies).
func (d *dnsServer) local(req *dns.Msg, name string) *dns.Msg {
	q := req.Question[0]
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = true
	d.stats.inc(DNSLocal)
	if name == d.s.domain {
		switch q.Qtype {
		case dns.TypeSOA:
			resp.Answer = append(resp.Answer, d.soaFor(q.Name))
		case dns.TypeNS:
			resp.Answer = append(resp.Answer, d.nsFor(q.Name))
		case dns.TypeANY:
			resp.Answer = append(resp.Answer, d.soaFor(q.Name), d.nsFor(q.Name))
		default:
			resp.Ns = append(resp.Ns, d.soa)
		}
		return resp
	}
	label := strings.TrimSuffix(name, "."+d.s.domain)
	var addr netip.Addr
	switch {
	case strings.Contains(label, "."):
		// No deeper names.
	case label == nameGateway:
		addr = d.s.gw
	case label == nameHost:
		addr = *d.hostAddr.Load()
	default:
		var ok bool
		if addr, ok = d.records.lookup(label); !ok {
			addr, _ = d.db.lookupName(label, d.s.clock())
		}
	}
	if !addr.IsValid() {
		d.stats.inc(DNSNXDomain)
		resp.Rcode = dns.RcodeNameError
		resp.Ns = append(resp.Ns, d.soa)
		return resp
	}
	switch q.Qtype {
	case dns.TypeA, dns.TypeANY:
		resp.Answer = append(resp.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: localTTL},
			A:   addr.AsSlice(),
		})
	default:
		resp.Ns = append(resp.Ns, d.soa) // NODATA (RFC 2308 §2.2)
	}
	return resp
}

// reverse answers a PTR name for an address of the subnet (the zone is
// served locally, RFC 6303 §3: private reverse lookups must not leak).
func (d *dnsServer) reverse(req *dns.Msg, a netip.Addr) *dns.Msg {
	q := req.Question[0]
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = true
	d.stats.inc(DNSLocal)
	var target string
	switch {
	case a == d.s.gw:
		target = nameGateway + "." + d.s.domain
	case a == *d.hostAddr.Load():
		target = nameHost + "." + d.s.domain
	default:
		if n, ok := d.db.nameOf(a, d.s.clock()); ok {
			target = n + "." + d.s.domain
		} else if n, ok := d.records.nameOf(a); ok {
			target = n + "." + d.s.domain
		}
	}
	soa := *d.soa
	soa.Hdr.Name = reverseZone(d.s.subnet)
	if target == "" {
		d.stats.inc(DNSNXDomain)
		resp.Rcode = dns.RcodeNameError
		resp.Ns = append(resp.Ns, &soa)
		return resp
	}
	if q.Qtype != dns.TypePTR && q.Qtype != dns.TypeANY {
		resp.Ns = append(resp.Ns, &soa)
		return resp
	}
	resp.Answer = append(resp.Answer, &dns.PTR{
		Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: localTTL},
		Ptr: target,
	})
	return resp
}

func (d *dnsServer) soaFor(owner string) dns.RR {
	soa := *d.soa
	soa.Hdr.Name = owner
	return &soa
}

func (d *dnsServer) nsFor(owner string) dns.RR {
	ns := *d.ns
	ns.Hdr.Name = owner
	return &ns
}

// servFail is the answer when every upstream failed: SERVFAIL, with an
// Extended DNS Error "Network Error" (RFC 8914 §4.24) for EDNS clients.
func (d *dnsServer) servFail(req *dns.Msg) *dns.Msg {
	d.stats.inc(DNSServFail)
	resp := rcodeReply(req, dns.RcodeServerFailure)
	if req.IsEdns0() != nil {
		resp.SetEdns0(uint16(d.s.mtu-udpHeaders), false)
		opt := resp.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeNetworkError, ExtraText: "no upstream resolver answered"})
	}
	return resp
}

// pack turns an answer (local, cached or forwarded) into wire bytes for
// req's client: its ID, its question (with the client's letter case,
// RFC 4343 §4.1), an OPT record only if the client sent one (RFC 6891
// §7), truncated to maxSize over UDP.
func (d *dnsServer) pack(req, resp *dns.Msg, udp bool, maxSize int) []byte {
	resp.Id = req.Id
	resp.Response = true
	resp.Opcode = req.Opcode
	resp.RecursionDesired = req.RecursionDesired
	resp.RecursionAvailable = true
	resp.Question = req.Question
	extra := resp.Extra[:0:0]
	var ede []dns.EDNS0
	for _, rr := range resp.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			for _, e := range o.Option {
				if e.Option() == dns.EDNS0EDE {
					ede = append(ede, e)
				}
			}
			continue
		}
		extra = append(extra, rr)
	}
	resp.Extra = extra
	if ropt := req.IsEdns0(); ropt != nil {
		resp.SetEdns0(uint16(d.s.mtu-udpHeaders), ropt.Do())
		resp.IsEdns0().Option = ede
	} else if resp.Rcode > 0xf {
		resp.Rcode = dns.RcodeServerFailure // extended RCODEs need an OPT record
	}
	if udp {
		resp.Truncate(maxSize)
		if resp.Truncated {
			d.stats.inc(DNSTruncated)
		}
	} else {
		resp.Compress = true
	}
	p, err := resp.Pack()
	if err != nil || (udp && len(p) > maxSize) {
		if p, err = rcodeReply(req, dns.RcodeServerFailure).Pack(); err != nil {
			p = rawRcode(req.Id, dns.RcodeServerFailure)
		}
	}
	return p
}

// rawRcode is a bare 12-byte answer header with rcode rc.
func rawRcode(id uint16, rc int) []byte {
	return []byte{byte(id >> 8), byte(id), 0x80, 0x80 | byte(rc&0xf), 0, 0, 0, 0, 0, 0, 0, 0}
}

// formErr answers a query that does not parse (RFC 1035 §4.1.1 FORMERR),
// echoing the ID, opcode and RD bit of the raw header.
func (d *dnsServer) formErr(b []byte, answer func([]byte)) {
	d.stats.inc(DNSFormErr)
	h := make([]byte, 12)
	copy(h, b[:4])
	h[2] = 0x80 | b[2]&0x79 // QR, opcode, RD
	h[3] = dns.RcodeFormatError
	answer(h)
}

// rcodeReply is an empty answer with rcode rc; it keeps the question when
// there is exactly one.
func rcodeReply(req *dns.Msg, rc int) *dns.Msg {
	resp := new(dns.Msg)
	resp.Id = req.Id
	resp.Response = true
	resp.Opcode = req.Opcode
	resp.RecursionDesired = req.RecursionDesired
	resp.RecursionAvailable = true
	resp.Rcode = rc
	if len(req.Question) == 1 {
		resp.Question = req.Question
	}
	return resp
}

// parseReverse parses a lower-case "d.c.b.a.in-addr.arpa." name (RFC 1035
// §3.5) into the address a.b.c.d.
func parseReverse(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa.")
	if !ok {
		return netip.Addr{}, false
	}
	var v [4]byte
	for i := 3; i >= 0; i-- {
		var label string
		if i > 0 {
			label, rest, ok = strings.Cut(rest, ".")
			if !ok {
				return netip.Addr{}, false
			}
		} else {
			label = rest
		}
		if len(label) == 0 || len(label) > 3 || (len(label) > 1 && label[0] == '0') {
			return netip.Addr{}, false
		}
		n, err := strconv.Atoi(label)
		if err != nil || n > 255 {
			return netip.Addr{}, false
		}
		v[i] = byte(n)
	}
	return netip.AddrFrom4(v), true
}

// reverseZone is the in-addr.arpa name of the octet-aligned prefix that
// contains p (the SOA owner of negative reverse answers).
func reverseZone(p netip.Prefix) string {
	b := p.Addr().As4()
	n := p.Bits() / 8
	var sb strings.Builder
	for i := n - 1; i >= 0; i-- {
		sb.WriteString(strconv.Itoa(int(b[i])))
		sb.WriteByte('.')
	}
	sb.WriteString("in-addr.arpa.")
	return sb.String()
}
