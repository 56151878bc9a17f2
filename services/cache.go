package services

import (
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

const (
	// cacheMaxTTL caps positive TTLs (RFC 8767 §4 suggests a day-scale
	// cap, 604800 s at most).
	cacheMaxTTL = 86400
	// cacheMaxNegTTL caps negative TTLs (RFC 2308 §5: "values of one to
	// three hours have been found to work well").
	cacheMaxNegTTL = 3 * 3600
)

// cacheKey identifies a cached answer: the question (name case-folded,
// RFC 4343 §3) and the flags that change what an upstream returns.
type cacheKey struct {
	name          string
	qtype, qclass uint16
	do, cd        bool
}

func keyOf(m *dns.Msg) cacheKey {
	q := m.Question[0]
	k := cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass, cd: m.CheckingDisabled}
	if o := m.IsEdns0(); o != nil {
		k.do = o.Do()
	}
	return k
}

type cacheEntry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

// dnsCache holds upstream answers until their TTL runs out: positive
// answers for their smallest record TTL (RFC 1035 §3.2.1, RFC 2181 §5.2),
// NXDOMAIN and NODATA for the SOA's min(TTL, MINIMUM) (RFC 2308 §5).
// Answers are handed out with their TTLs decreased by the time spent in
// the cache. SERVFAIL, truncated and SOA-less negative answers are not
// cached.
type dnsCache struct {
	max int
	mu  sync.Mutex
	m   map[cacheKey]*cacheEntry
}

func newDNSCache(max int) *dnsCache {
	return &dnsCache{max: max, m: make(map[cacheKey]*cacheEntry)}
}

// get returns a copy of the cached answer for k, with TTLs adjusted, or nil.
func (c *dnsCache) get(k cacheKey, now time.Time) *dns.Msg {
	c.mu.Lock()
	e := c.m[k]
	if e == nil {
		c.mu.Unlock()
		return nil
	}
	if !now.Before(e.expires) {
		delete(c.m, k)
		c.mu.Unlock()
		return nil
	}
	m := e.msg.Copy()
	stored := e.stored
	c.mu.Unlock()
	age := uint32(max(now.Sub(stored), 0) / time.Second)
	for _, s := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range s {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			h := rr.Header()
			h.Ttl -= min(age, h.Ttl)
		}
	}
	return m
}

// put caches m (an upstream answer) under k, if it is cacheable.
func (c *dnsCache) put(k cacheKey, m *dns.Msg, now time.Time) {
	ttl, ok := cacheTTL(m)
	if !ok || ttl == 0 {
		return
	}
	e := &cacheEntry{msg: m.Copy(), stored: now, expires: now.Add(time.Duration(ttl) * time.Second)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		c.evict(now)
	}
	c.m[k] = e
}

// evict makes room for one entry: expired entries first (looking at a
// bounded number), else an arbitrary one (map order is random).
func (c *dnsCache) evict(now time.Time) {
	n := 0
	var victim cacheKey
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
			return
		}
		if n == 0 {
			victim = k
		}
		if n++; n >= 32 {
			break
		}
	}
	delete(c.m, victim)
}

// cacheTTL returns how long m may be cached, in seconds.
func cacheTTL(m *dns.Msg) (uint32, bool) {
	if m.Truncated {
		return 0, false
	}
	negative := m.Rcode == dns.RcodeNameError || (m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0)
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return 0, false
	}
	if negative {
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				return min(soa.Hdr.Ttl, soa.Minttl, cacheMaxNegTTL), true
			}
		}
		return 0, false
	}
	ttl := uint32(cacheMaxTTL)
	for _, s := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range s {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	return ttl, true
}
