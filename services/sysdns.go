package services

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The macOS resolver configuration. configd(8) keeps the system's DNS
// configuration (every interface's and VPN's servers, and the files of
// /etc/resolver/, resolver(5)); /etc/resolv.conf is only a generated
// summary of its first resolver and is often absent or stale. scutil --dns
// prints it: per scutil(8), "The first listed resolver(5) configuration is
// considered to be the 'default' configuration. Additional 'supplemental'
// configurations follow. Those containing a 'domain' name will be used for
// queries matching the specified domain. Those without will be used as a
// 'default' configuration in addition to the first listed." The parsers
// here are platform-independent (tested everywhere); sysdns_darwin.go runs
// scutil.

// maxSystemResolvers bounds what a parser keeps (a real configuration has
// a few dozen resolvers at most).
const (
	maxSystemResolvers = 256
	maxResolverServers = 16
)

// SystemResolver is one resolver of the system configuration: a
// "resolver #N" block of scutil --dns or one /etc/resolver/ file.
type SystemResolver struct {
	// Domain is the domain it answers for (lower case, no trailing dot);
	// empty for a default resolver.
	Domain string
	// Servers are its name servers as "host:port" (port 53 unless the
	// resolver says "port"); IPv6 link-local servers keep their zone.
	Servers []string
	// Search are its search domains.
	Search []string
	// Options is its "options" value ("mdns" for the multicast DNS
	// resolvers, which are not unicast upstreams).
	Options string
	// Order is its "order" (lower first; 0 when absent).
	Order uint32
	// Scoped is set for the resolvers of the "for scoped queries" section
	// (bound to one interface; not used for forwarding).
	Scoped bool
}

// isMDNS reports whether r is a multicast DNS resolver.
func (r *SystemResolver) isMDNS() bool {
	return slices.Contains(strings.Fields(r.Options), "mdns")
}

// ParseScutilDNS parses the output of `scutil --dns` (macOS configd's
// dnsinfo printed by scutil.tproj/dns.c): sections "DNS configuration" and
// "DNS configuration (for scoped queries)", each a list of "resolver #N"
// blocks of "key : value" lines ("nameserver[i]", "search domain[i]",
// "domain", "port", "order", "options", and others that are ignored).
// Servers that are not IP addresses are skipped; an empty output is no
// resolver. Lines outside a resolver block other than section titles are
// an error, so that a format change shows.
func ParseScutilDNS(out []byte) ([]SystemResolver, error) {
	var (
		res    []SystemResolver
		cur    *SystemResolver
		port   = "53"
		hosts  []string
		scoped bool
	)
	flush := func() {
		if cur == nil {
			return
		}
		for _, h := range hosts {
			if len(cur.Servers) < maxResolverServers {
				cur.Servers = append(cur.Servers, net.JoinHostPort(h, port))
			}
		}
		res = append(res, *cur)
		cur, hosts, port = nil, nil, "53"
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "DNS configuration"):
			flush()
			scoped = strings.Contains(line, "scoped")
			continue
		case strings.HasPrefix(line, "resolver #"):
			flush()
			if len(res) >= maxSystemResolvers {
				return nil, fmt.Errorf("scutil --dns line %d: more than %d resolvers", n, maxSystemResolvers)
			}
			if _, err := strconv.ParseUint(strings.TrimPrefix(line, "resolver #"), 10, 16); err != nil {
				return nil, fmt.Errorf("scutil --dns line %d: %q: bad resolver number", n, line)
			}
			cur = &SystemResolver{Scoped: scoped}
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok || cur == nil {
			return nil, fmt.Errorf("scutil --dns line %d: %q: not a resolver's \"key : value\"", n, line)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		base, _, indexed := strings.Cut(key, "[")
		switch {
		case base == "nameserver" && indexed:
			if a, err := netip.ParseAddr(val); err == nil {
				hosts = append(hosts, a.String())
			}
		case base == "search domain" && indexed:
			if d := normDomain(val); d != "" && len(cur.Search) < maxResolverServers {
				cur.Search = append(cur.Search, d)
			}
		case key == "domain":
			cur.Domain = normDomain(val)
		case key == "port":
			p, err := strconv.ParseUint(val, 10, 16)
			if err != nil || p == 0 {
				return nil, fmt.Errorf("scutil --dns line %d: port %q", n, val)
			}
			port = strconv.FormatUint(p, 10)
		case key == "order":
			o, err := strconv.ParseUint(val, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("scutil --dns line %d: order %q", n, val)
			}
			cur.Order = uint32(o)
		case key == "options":
			cur.Options = val
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scutil --dns: %w", err)
	}
	flush()
	return res, nil
}

// ParseResolverFile parses one /etc/resolver/ file (resolver(5)): the file
// name is the domain unless a "domain" line says otherwise; "nameserver"
// (repeatable), "port", "search", "search_order" and "options" are read,
// other keys ("timeout", "sortlist") ignored, "#" starts a comment.
func ParseResolverFile(name string, data []byte) (SystemResolver, error) {
	r := SystemResolver{Domain: normDomain(name)}
	port := "53"
	var hosts []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return SystemResolver{}, fmt.Errorf("resolver file %s line %d: %q has no value", name, n, f[0])
		}
		switch f[0] {
		case "nameserver":
			a, err := netip.ParseAddr(f[1])
			if err != nil {
				return SystemResolver{}, fmt.Errorf("resolver file %s line %d: nameserver %q: %w", name, n, f[1], err)
			}
			if len(hosts) < maxResolverServers {
				hosts = append(hosts, a.String())
			}
		case "port":
			p, err := strconv.ParseUint(f[1], 10, 16)
			if err != nil || p == 0 {
				return SystemResolver{}, fmt.Errorf("resolver file %s line %d: port %q", name, n, f[1])
			}
			port = strconv.FormatUint(p, 10)
		case "domain":
			r.Domain = normDomain(f[1])
		case "search":
			for _, d := range f[1:] {
				if d = normDomain(d); d != "" && len(r.Search) < maxResolverServers {
					r.Search = append(r.Search, d)
				}
			}
		case "search_order":
			o, err := strconv.ParseUint(f[1], 10, 32)
			if err != nil {
				return SystemResolver{}, fmt.Errorf("resolver file %s line %d: search_order %q", name, n, f[1])
			}
			r.Order = uint32(o)
		case "options":
			r.Options = strings.Join(f[1:], " ")
		}
	}
	if err := sc.Err(); err != nil {
		return SystemResolver{}, fmt.Errorf("resolver file %s: %w", name, err)
	}
	for _, h := range hosts {
		r.Servers = append(r.Servers, net.JoinHostPort(h, port))
	}
	return r, nil
}

// normDomain lower-cases d and drops a trailing dot.
func normDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// systemDNS is what the forwarder uses of the system configuration: the
// default servers and the servers of each supplemental domain.
type systemDNS struct {
	defaults []string
	domains  map[string][]string // domain -> servers
}

// newSystemDNS selects, from resolvers in the order listed, the unscoped
// unicast ones (scutil(8): the first listed and every other without a
// domain are defaults, those with a domain are for queries in it; scoped
// and mDNS resolvers are skipped). Default resolvers are taken by their
// order (stable), servers once each.
func newSystemDNS(resolvers []SystemResolver) systemDNS {
	s := systemDNS{domains: map[string][]string{}}
	var defs []SystemResolver
	for i, r := range resolvers {
		if r.Scoped || r.isMDNS() || len(r.Servers) == 0 {
			continue
		}
		if r.Domain == "" || i == 0 {
			defs = append(defs, r)
			continue
		}
		for _, sv := range r.Servers {
			if !slices.Contains(s.domains[r.Domain], sv) {
				s.domains[r.Domain] = append(s.domains[r.Domain], sv)
			}
		}
	}
	slices.SortStableFunc(defs, func(a, b SystemResolver) int {
		switch {
		case a.Order == b.Order:
			return 0
		case a.Order == 0: // no order: as listed, before ordered ones
			return -1
		case b.Order == 0:
			return 1
		case a.Order < b.Order:
			return -1
		}
		return 1
	})
	for _, r := range defs {
		for _, sv := range r.Servers {
			if !slices.Contains(s.defaults, sv) {
				s.defaults = append(s.defaults, sv)
			}
		}
	}
	return s
}

// servers returns the upstreams for a query name: the servers of the
// longest supplemental domain that name is in, else the defaults.
func (s systemDNS) servers(name string) []string {
	name = normDomain(name)
	for {
		if sv, ok := s.domains[name]; ok {
			return sv
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return s.defaults
		}
		name = name[i+1:]
	}
}
