package services

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The samples in testdata/scutil are written in the format scutil --dns
// prints (configd's scutil.tproj/dns.c): a Wi-Fi Mac and one with a
// split-tunnel VPN and a local resolver on another port. They were not
// captured on a Mac by this project (none was available); see README
// "macOS".
func readScutil(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "scutil", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseScutilDNS(t *testing.T) {
	rs, err := ParseScutilDNS(readScutil(t, "wifi.txt"))
	require.NoError(t, err)
	require.Len(t, rs, 5)
	require.Equal(t, SystemResolver{Servers: []string{"192.168.1.1:53", "[fe80::1%en0]:53"}, Search: []string{"lan"}}, rs[0])
	require.Equal(t, SystemResolver{Domain: "local", Options: "mdns", Order: 300000}, rs[1])
	require.True(t, rs[4].Scoped)
	require.Equal(t, rs[0].Servers, rs[4].Servers)

	rs, err = ParseScutilDNS(readScutil(t, "vpn.txt"))
	require.NoError(t, err)
	require.Len(t, rs, 6)
	require.Equal(t, SystemResolver{Domain: "internal", Servers: []string{"127.0.0.1:5300"}}, rs[2])

	for _, tc := range []struct{ name, in, want string }{
		{"stray line", "DNS configuration\n\nhello\n", "not a resolver's"},
		{"key before resolver", "DNS configuration\n  nameserver[0] : 1.1.1.1\n", "not a resolver's"},
		{"bad number", "resolver #x\n", "bad resolver number"},
		{"bad port", "resolver #1\n  port : 99999\n", "port"},
		{"zero port", "resolver #1\n  port : 0\n", "port"},
		{"bad order", "resolver #1\n  order : -1\n", "order"},
		{"long line", "resolver #1\n  domain : " + strings.Repeat("a", 70<<10) + "\n", "token too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseScutilDNS([]byte(tc.in))
			require.ErrorContains(t, err, tc.want)
		})
	}
	rs, err = ParseScutilDNS(nil)
	require.NoError(t, err)
	require.Empty(t, rs)
	rs, err = ParseScutilDNS([]byte("resolver #1\n  nameserver[0] : not-an-address\n  nameserver[1] : 9.9.9.9\n"))
	require.NoError(t, err)
	require.Equal(t, []string{"9.9.9.9:53"}, rs[0].Servers, "a server that is not an address is skipped")
}

func TestSystemDNSServers(t *testing.T) {
	for _, tc := range []struct {
		file     string
		defaults []string
		names    map[string][]string // query name -> servers
	}{
		{"wifi.txt", []string{"192.168.1.1:53", "[fe80::1%en0]:53"}, map[string][]string{
			"example.com.": {"192.168.1.1:53", "[fe80::1%en0]:53"},
			"x.local.":     {"192.168.1.1:53", "[fe80::1%en0]:53"}, // mDNS is not an upstream
		}},
		{"vpn.txt", []string{"10.8.0.1:53", "1.1.1.1:53"}, map[string][]string{
			"example.com.":          {"10.8.0.1:53", "1.1.1.1:53"},
			"corp.example.com.":     {"10.8.0.53:53", "10.8.0.54:53"},
			"WWW.Corp.Example.COM.": {"10.8.0.53:53", "10.8.0.54:53"},
			"notcorp.example.com.":  {"10.8.0.1:53", "1.1.1.1:53"},
			"db.internal":           {"127.0.0.1:5300"},
			".":                     {"10.8.0.1:53", "1.1.1.1:53"},
		}},
		{"none.txt", nil, map[string][]string{"example.com.": nil}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			rs, err := ParseScutilDNS(readScutil(t, tc.file))
			require.NoError(t, err)
			s := newSystemDNS(rs)
			require.Equal(t, tc.defaults, s.defaults)
			for name, want := range tc.names {
				require.Equal(t, want, s.servers(name), name)
			}
		})
	}
}

func TestParseResolverFile(t *testing.T) {
	r, err := ParseResolverFile("Corp.Example.com", []byte("# VPN\nnameserver 10.8.0.53\nnameserver fd00::53 # v6\nport 5353\nsearch a.example b.example\nsearch_order 5\ntimeout 3\noptions ndots:2\n"))
	require.NoError(t, err)
	require.Equal(t, SystemResolver{Domain: "corp.example.com", Servers: []string{"10.8.0.53:5353", "[fd00::53]:5353"},
		Search: []string{"a.example", "b.example"}, Order: 5, Options: "ndots:2"}, r)
	r, err = ParseResolverFile("test", []byte("domain other.test.\nnameserver 127.0.0.1\n"))
	require.NoError(t, err)
	require.Equal(t, "other.test", r.Domain)
	for _, tc := range []struct{ in, want string }{
		{"nameserver\n", "has no value"},
		{"nameserver example.com\n", "nameserver"},
		{"port 70000\n", "port"},
		{"search_order x\n", "search_order"},
	} {
		_, err := ParseResolverFile("d", []byte(tc.in))
		require.ErrorContains(t, err, tc.want, tc.in)
	}
}

// TestUpstreamsSystem: with a system source the forwarder's upstreams come
// from it (per domain), are read again after systemDNSCheck, and fall back
// to resolv.conf when it fails.
func TestUpstreamsSystem(t *testing.T) {
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	require.NoError(t, os.WriteFile(rc, []byte("nameserver 127.0.0.9\n"), 0o644))
	now := time.Unix(1e9, 0)
	out := readScutil(t, "vpn.txt")
	var fail error
	calls := 0
	u := &upstreams{path: rc, clock: func() time.Time { return now }, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		system: func() ([]SystemResolver, error) {
			calls++
			if fail != nil {
				return nil, fail
			}
			return ParseScutilDNS(out)
		}}
	require.Equal(t, []string{"10.8.0.1:53", "1.1.1.1:53"}, u.get("example.com."))
	require.Equal(t, []string{"10.8.0.53:53", "10.8.0.54:53"}, u.get("git.corp.example.com."))
	require.Equal(t, 1, calls, "read once within systemDNSCheck")
	out = readScutil(t, "wifi.txt")
	now = now.Add(systemDNSCheck)
	require.Equal(t, []string{"192.168.1.1:53", "[fe80::1%en0]:53"}, u.get("git.corp.example.com."))
	require.Equal(t, 2, calls)
	fail = errors.New("scutil: not found")
	now = now.Add(systemDNSCheck)
	require.Equal(t, []string{"127.0.0.9:53"}, u.get("example.com."), "resolv.conf when the system cannot be read")
	fail, out = nil, readScutil(t, "none.txt")
	now = now.Add(systemDNSCheck)
	require.Equal(t, []string{"127.0.0.9:53"}, u.get("example.com."), "resolv.conf when the system has no default server")
}

// FuzzParseScutilDNS: any output either fails or gives resolvers whose
// servers are host:port and whose selection never panics.
func FuzzParseScutilDNS(f *testing.F) {
	for _, n := range []string{"wifi.txt", "vpn.txt", "none.txt"} {
		f.Add(readScutil(f, n))
	}
	f.Add([]byte("resolver #1\n  nameserver[0] : ::1\n  port : 53\n  domain : .\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		rs, err := ParseScutilDNS(out)
		if err != nil {
			return
		}
		if len(rs) > maxSystemResolvers {
			t.Fatalf("%d resolvers", len(rs))
		}
		for _, r := range rs {
			if len(r.Servers) > maxResolverServers {
				t.Fatalf("%d servers", len(r.Servers))
			}
			for _, s := range r.Servers {
				if _, err := parseUpstream(s); err != nil {
					t.Fatalf("server %q: %v", s, err)
				}
			}
		}
		s := newSystemDNS(rs)
		_ = s.servers("a.b.c.")
		_ = s.servers("")
	})
}

// FuzzParseResolverFile: any resolver(5) file either fails or gives
// host:port servers.
func FuzzParseResolverFile(f *testing.F) {
	f.Add("corp.example.com", []byte("nameserver 10.8.0.53\nport 5353\nsearch a b\n"))
	f.Add("x", []byte("domain y\nnameserver ::1 # c\noptions a b\nsearch_order 1\n"))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		r, err := ParseResolverFile(name, data)
		if err != nil {
			return
		}
		for _, s := range r.Servers {
			if _, err := parseUpstream(s); err != nil {
				t.Fatalf("server %q: %v", s, err)
			}
		}
	})
}
