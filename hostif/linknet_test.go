package hostif

import (
	"net/netip"
	"testing"
)

func TestLinkNetAddrs(t *testing.T) {
	for _, tc := range []struct {
		prefix, host, nat, err string
	}{
		{prefix: "198.19.255.252/30", host: "198.19.255.253", nat: "198.19.255.254"},
		{prefix: "198.19.255.253/30", host: "198.19.255.253", nat: "198.19.255.254"}, // not masked
		{prefix: "10.0.0.0/24", host: "10.0.0.1", nat: "10.0.0.2"},
		{prefix: "10.0.0.6/31", host: "10.0.0.6", nat: "10.0.0.7"},
		{prefix: "10.0.0.1/32", err: "one address"},
		{prefix: "fd00::/64", err: "not an IPv4 prefix"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			host, nat, err := linkNetAddrs(netip.MustParsePrefix(tc.prefix))
			if wantErr(t, err, tc.err) {
				return
			}
			if host.String() != tc.host || nat.String() != tc.nat {
				t.Errorf("host %v nat %v, want %s %s", host, nat, tc.host, tc.nat)
			}
		})
	}
	if h := mustHost(DefaultLinkNet); h != netip.MustParseAddr("198.19.255.253") {
		t.Errorf("DefaultLinkNet host %v", h)
	}
}

func TestNATAddrFor(t *testing.T) {
	for _, tc := range []struct {
		addr, nat string // addr is host/bits
		ok        bool
	}{
		{"10.99.0.1/24", "10.99.0.2", true},
		{"10.99.0.7/24", "10.99.0.1", true},
		{"198.19.255.254/30", "198.19.255.253", true},
		{"10.0.0.0/31", "10.0.0.1", true},
		{"10.0.0.1/31", "10.0.0.0", true},
		{"10.0.0.1/32", "", false},
		{"0.0.0.1/0", "0.0.0.2", true},
	} {
		p := netip.MustParsePrefix(tc.addr)
		nat, err := natAddrFor(p, p.Addr())
		if (err == nil) != tc.ok || (tc.ok && nat.String() != tc.nat) {
			t.Errorf("natAddrFor(%s) = %v, %v; want %s ok=%v", tc.addr, nat, err, tc.nat, tc.ok)
		}
	}
}

func TestOverlappingRoute(t *testing.T) {
	routes := []routeInfo{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "eth0"},
		{Dst: netip.MustParsePrefix("192.168.1.0/24"), Dev: "eth0"},
		{Dst: netip.MustParsePrefix("198.19.0.0/16"), Dev: "bench0"},
	}
	if r, ok := overlappingRoute(DefaultLinkNet, routes); !ok || r.Dev != "bench0" {
		t.Errorf("DefaultLinkNet: %v %v, want bench0", r, ok)
	}
	if r, ok := overlappingRoute(netip.MustParsePrefix("10.1.2.0/30"), routes); ok {
		t.Errorf("10.1.2.0/30 overlaps %v", r)
	}
	if _, ok := overlappingRoute(netip.MustParsePrefix("192.168.0.0/16"), routes); !ok {
		t.Error("192.168.0.0/16 does not overlap 192.168.1.0/24")
	}
}

func TestLastAddr(t *testing.T) {
	for p, want := range map[string]string{"10.0.0.0/24": "10.0.0.255", "0.0.0.0/0": "255.255.255.255", "10.1.1.1/32": "10.1.1.1"} {
		if got := lastAddr(netip.MustParsePrefix(p)); got.String() != want {
			t.Errorf("lastAddr(%s) = %v, want %s", p, got, want)
		}
	}
}
