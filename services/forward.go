package services

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

const (
	// maxInflight bounds the upstream exchanges running at once (one
	// goroutine each); queries beyond it are dropped and counted, and the
	// client retries.
	maxInflight = 256
	// upstreamEDNSSize is the EDNS0 payload size offered upstream: the
	// DNS Flag Day 2020 value, which avoids IP fragmentation on the host's
	// path.
	upstreamEDNSSize = 1232
	// resolvConfCheck is how often, at most, resolv.conf is stat'ed for
	// changes (on the forwarding path; no watcher goroutine).
	resolvConfCheck = time.Second
)

// forwarder sends queries for names outside the local zones to upstream
// resolvers, over UDP with a retry over TCP when the answer is truncated
// (RFC 7766 §5), one upstream after the other until one answers. Identical
// queries in flight are coalesced, and answers are cached by their TTLs.
type forwarder struct {
	s     *settings
	stats *Stats
	cache *dnsCache
	ups   *upstreams
	udp   dns.Client
	tcp   dns.Client

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{}

	mu       sync.Mutex
	inflight map[cacheKey][]func(*dns.Msg)
}

func newForwarder(s *settings, stats *Stats) *forwarder {
	f := &forwarder{
		s:        s,
		stats:    stats,
		ups:      newUpstreams(s),
		udp:      dns.Client{Net: "udp", Timeout: s.dnsTimeout, UDPSize: upstreamEDNSSize},
		tcp:      dns.Client{Net: "tcp", Timeout: s.dnsTimeout},
		sem:      make(chan struct{}, maxInflight),
		inflight: make(map[cacheKey][]func(*dns.Msg)),
	}
	if s.cacheSize > 0 {
		f.cache = newDNSCache(s.cacheSize)
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f
}

// close stops every exchange in flight and waits for their goroutines.
// Their callbacks are not called.
func (f *forwarder) close() {
	// Cancel under mu: resolve checks ctx and calls wg.Add under mu, so no
	// Add can race with the Wait below.
	f.mu.Lock()
	f.cancel()
	f.mu.Unlock()
	f.wg.Wait()
}

// resolve answers req from the cache (synchronously) or upstream (later,
// from another goroutine). done gets a message of its own to modify, or nil
// when every upstream failed. It is not called when the query is dropped
// (too many in flight, forwarder closed): resolve then returns false.
func (f *forwarder) resolve(req *dns.Msg, done func(*dns.Msg)) bool {
	key := keyOf(req)
	now := f.s.clock()
	if f.cache != nil {
		if m := f.cache.get(key, now); m != nil {
			f.stats.inc(DNSCacheHits)
			done(m)
			return true
		}
	}
	f.mu.Lock()
	if waiters, ok := f.inflight[key]; ok {
		f.inflight[key] = append(waiters, done)
		f.mu.Unlock()
		return true
	}
	if f.ctx.Err() != nil {
		f.mu.Unlock()
		f.stats.drop(DropClosed)
		return false
	}
	select {
	case f.sem <- struct{}{}:
	default:
		f.mu.Unlock()
		f.stats.drop(DropDNSOverload)
		return false
	}
	f.inflight[key] = []func(*dns.Msg){done}
	f.wg.Add(1)
	f.mu.Unlock()

	q := new(dns.Msg)
	q.Id = dns.Id()
	q.RecursionDesired = true
	q.CheckingDisabled = req.CheckingDisabled
	q.Question = []dns.Question{req.Question[0]}
	do := false
	if o := req.IsEdns0(); o != nil {
		do = o.Do()
	}
	q.SetEdns0(upstreamEDNSSize, do)
	go func() {
		defer f.wg.Done()
		defer func() { <-f.sem }()
		resp := f.exchange(q)
		if resp != nil && f.cache != nil {
			f.cache.put(key, resp, f.s.clock())
		}
		f.mu.Lock()
		waiters := f.inflight[key]
		delete(f.inflight, key)
		f.mu.Unlock()
		if f.ctx.Err() != nil {
			return
		}
		for i, w := range waiters {
			m := resp
			if m != nil && i < len(waiters)-1 {
				m = resp.Copy()
			}
			w(m)
		}
	}()
	return true
}

// exchange asks each upstream in turn and returns the first usable answer
// (anything but SERVFAIL and REFUSED that answers our question), or nil.
func (f *forwarder) exchange(q *dns.Msg) *dns.Msg {
	name := ""
	if len(q.Question) > 0 {
		name = q.Question[0].Name
	}
	for _, up := range f.ups.get(name) {
		f.stats.inc(DNSForwarded)
		// rtt runs from the query's send to the answer's arrival (not the
		// dial); it is counted for every exchange that got an answer.
		r, rtt, err := f.udp.ExchangeContext(f.ctx, q, up)
		if err == nil {
			f.stats.upstreamLatency.observe(rtt)
		}
		if err == nil && r.Truncated {
			f.stats.inc(DNSTCPRetries)
			r, rtt, err = f.tcp.ExchangeContext(f.ctx, q, up)
			if err == nil {
				f.stats.upstreamLatency.observe(rtt)
			}
		}
		if f.ctx.Err() != nil {
			return nil
		}
		if err != nil || r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused || !sameQuestion(q, r) {
			f.stats.inc(DNSUpstreamErrs)
			rc := -1
			if r != nil {
				rc = r.Rcode
			}
			f.s.log.Debug("dns upstream failed", "upstream", up, "name", q.Question[0].Name, "rcode", rc, "err", err)
			continue
		}
		return r
	}
	return nil
}

// sameQuestion reports whether r answers q (the ID is checked by the
// client); a mismatch is a spoofing attempt or a broken upstream.
func sameQuestion(q, r *dns.Msg) bool {
	if len(r.Question) != 1 {
		return false
	}
	a, b := q.Question[0], r.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

// upstreams is the list of upstream resolvers: fixed by configuration, or
// the system's (macOS: scutil --dns, sysdns_darwin.go, read again at most
// every systemDNSCheck), or the nameserver lines of resolv.conf, re-read
// when the file changes (checked at most once a second, when a query needs
// upstreams).
type upstreams struct {
	fixed []string
	path  string
	clock func() time.Time
	log   *slog.Logger
	// system, if set, reads the system's resolvers; when it fails,
	// resolv.conf is read instead.
	system func() ([]SystemResolver, error)

	sysChecked time.Time
	sys        systemDNS
	sysOK      bool
	sysErr     bool // its failure was logged

	mu      sync.Mutex
	checked time.Time
	info    os.FileInfo
	servers []string
}

func newUpstreams(s *settings) *upstreams {
	u := &upstreams{fixed: s.upstreams, path: s.resolvConf, clock: s.clock, log: s.log}
	if s.resolvConf == DefaultResolvConf {
		u.system = systemResolvers // nil where resolv.conf is the system's
	}
	return u
}

// systemDNSCheck is how often, at most, the system's resolvers are read
// again (running scutil costs a few milliseconds).
const systemDNSCheck = 5 * time.Second

// get returns the current upstream addresses ("host:port") for a query
// for name. The slice must not be modified.
func (u *upstreams) get(name string) []string {
	if len(u.fixed) > 0 {
		return u.fixed
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.clock()
	if u.system != nil {
		if u.sysChecked.IsZero() || now.Before(u.sysChecked) || now.Sub(u.sysChecked) >= systemDNSCheck {
			u.sysChecked = now
			u.refreshSystem()
		}
		if u.sysOK {
			return u.sys.servers(name)
		}
	}
	if !u.checked.IsZero() && !now.Before(u.checked) && now.Sub(u.checked) < resolvConfCheck {
		return u.servers
	}
	u.checked = now
	fi, err := os.Stat(u.path)
	if err != nil {
		if u.info != nil || u.servers == nil {
			u.log.Warn("dns: cannot read resolv.conf, no upstream resolvers", "path", u.path, "err", err)
		}
		u.info, u.servers = nil, []string{}
		return u.servers
	}
	if u.info != nil && os.SameFile(fi, u.info) && fi.ModTime().Equal(u.info.ModTime()) && fi.Size() == u.info.Size() {
		return u.servers
	}
	u.info = fi
	cc, err := dns.ClientConfigFromFile(u.path)
	if err != nil {
		u.log.Warn("dns: cannot parse resolv.conf", "path", u.path, "err", err)
		u.servers = []string{}
		return u.servers
	}
	var servers []string
	for _, s := range cc.Servers {
		// resolv.conf(5) has no port syntax: every nameserver is on 53.
		if ap, err := parseUpstream(s); err == nil {
			servers = append(servers, ap)
		}
	}
	if !slices.Equal(servers, u.servers) {
		u.log.Info("dns upstreams from resolv.conf", "path", u.path, "servers", servers)
	}
	u.servers = servers
	if u.servers == nil {
		u.servers = []string{}
	}
	return u.servers
}

// refreshSystem reads the system's resolvers; on failure (or no default
// server) get falls back to resolv.conf.
func (u *upstreams) refreshSystem() {
	rs, err := u.system()
	if err == nil {
		sys := newSystemDNS(rs)
		if len(sys.defaults) == 0 {
			err = errors.New("no default resolver with a unicast server")
		} else {
			if !u.sysOK || !slices.Equal(sys.defaults, u.sys.defaults) || len(sys.domains) != len(u.sys.domains) {
				u.log.Info("dns upstreams from the system configuration", "servers", sys.defaults, "domains", len(sys.domains))
			}
			u.sys, u.sysOK, u.sysErr = sys, true, false
			return
		}
	}
	if !u.sysErr {
		u.log.Warn("dns: cannot read the system's resolvers; using resolv.conf", "path", u.path, "err", err)
		u.sysErr = true
	}
	u.sysOK = false
}
