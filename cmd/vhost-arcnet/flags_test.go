package main

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/hostif"
	"github.com/stretchr/testify/require"
)

func TestParseFlags(t *testing.T) {
	ok := []struct {
		name string
		args []string
		want func(t *testing.T, c *config)
	}{
		{"defaults", []string{"--socket", "/tmp/s"}, func(t *testing.T, c *config) {
			require.Equal(t, []string{"/tmp/s"}, c.sockets)
			require.Equal(t, "none", c.uplink)
			require.EqualValues(t, 0o600, c.socketMode)
			require.Equal(t, 1, c.queuePairs)
			require.Equal(t, 64, c.sourceSize)
			require.Equal(t, 2048<<10, c.rxBacklog)
			require.Equal(t, slog.LevelInfo, c.logLevel)
			require.False(t, c.logJSON)
		}},
		{"repeatable", []string{"--socket", "a", "--socket", "b", "--connect", "c", "--uplink", "loopback",
			"--queue-pairs", "4", "--socket-mode", "0660", "--log-format", "json", "--log-level", "debug", "--poll"},
			func(t *testing.T, c *config) {
				require.Equal(t, []string{"a", "b"}, c.sockets)
				require.Equal(t, []string{"c"}, c.connects)
				require.Equal(t, "loopback", c.uplink)
				require.Equal(t, 4, c.queuePairs)
				require.EqualValues(t, 0o660, c.socketMode)
				require.True(t, c.logJSON)
				require.True(t, c.poll)
				require.Equal(t, slog.LevelDebug, c.logLevel)
			}},
		{"no backlog", []string{"--socket", "a", "--rx-backlog", "0"}, func(t *testing.T, c *config) {
			require.Zero(t, c.rxBacklog)
		}},
		{"copying sink", []string{"--socket", "a", "--uplink", "sink-copy"}, func(t *testing.T, c *config) {
			require.Equal(t, "sink-copy", c.uplink)
			require.False(t, c.guestNetwork())
		}},
		{"guest network", []string{"--socket", "a", "--subnet", "10.7.0.9/16", "--domain", "lab.test",
			"--dns-upstream", "127.0.0.1:5353", "--dns-upstream", "::1", "--lease-file", "/tmp/l.json",
			"--reserve", "52:54:00:00:00:07=10.7.0.7", "--lease-time", "10m", "--allow-spoofing"},
			func(t *testing.T, c *config) {
				require.Equal(t, "10.7.0.0/16", c.subnet.String())
				require.Equal(t, "lab.test", c.domain)
				require.Equal(t, []string{"127.0.0.1:5353", "::1"}, c.dnsUpstreams)
				require.Equal(t, "/tmp/l.json", c.leaseFile)
				require.Len(t, c.reservations, 1)
				require.Equal(t, "10.7.0.7", c.reservations[0].Addr.String())
				require.Equal(t, 10*time.Minute, c.leaseTime)
				require.True(t, c.allowSpoofing)
			}},
		{"macs", []string{"--socket", "/s", "--connect", "/c", "--mac", "/s=52:54:00:00:00:10", "--link-speed", "10000"},
			func(t *testing.T, c *config) {
				require.Equal(t, map[string][6]byte{"/s": {0x52, 0x54, 0, 0, 0, 0x10}}, c.macs)
				require.EqualValues(t, 10000, c.linkSpeed)
			}},
		{"connect only", []string{"--connect", "x", "--uplink", "source", "--source-size", "1518"}, func(t *testing.T, c *config) {
			require.Equal(t, 1518, c.sourceSize)
		}},
		{"tap", []string{"--socket", "a", "--uplink", "tap", "--masquerade", "--forward", "tcp:8080:web:80",
			"--forward", "udp:0.0.0.0:5353:192.168.127.9:53", "--uplink-net", "10.99.0.0/30"}, func(t *testing.T, c *config) {
			require.Equal(t, "tap", c.uplink)
			require.Empty(t, c.tapName)
			require.True(t, c.routed() && c.guestNetwork() && c.masquerade)
			require.Equal(t, netip.MustParsePrefix("10.99.0.0/30"), c.uplinkNet)
			require.Len(t, c.forwards, 2)
			require.Equal(t, "web", c.forwards[0].Guest)
			require.Equal(t, netip.MustParseAddr("127.0.0.1"), c.forwards[0].HostAddr)
			require.Equal(t, uint16(5353), c.forwards[1].HostPort)
		}},
		{"lease file default", []string{"--connect", "/run/q/vm.sock", "--socket", "/s"}, func(t *testing.T, c *config) {
			require.Equal(t, "/s.leases", c.leaseFile, "next to the first --socket")
			require.Equal(t, "/s.natflows", c.natStateFile, "next to the first --socket")
		}},
		{"lease file none", []string{"--socket", "/s", "--lease-file", "none"}, func(t *testing.T, c *config) {
			require.Empty(t, c.leaseFile)
			require.Equal(t, "/s.natflows", c.natStateFile, "NAT flows are kept without the leases")
		}},
		{"nat state file", []string{"--socket", "/s", "--nat-state-file", "/var/lib/a/flows"}, func(t *testing.T, c *config) {
			require.Equal(t, "/var/lib/a/flows", c.natStateFile)
		}},
		{"nat state file none", []string{"--socket", "/s", "--nat-state-file", "none"}, func(t *testing.T, c *config) {
			require.Empty(t, c.natStateFile)
		}},
		{"frame sockets", []string{"--listen-stream", "/run/s.sock", "--listen-stream", "127.0.0.1:7000",
			"--listen-stream", "[::1]:7001", "--listen-dgram", "/run/d.sock", "--uplink", "tap:arc0"}, func(t *testing.T, c *config) {
			require.Equal(t, []frameSockAddr{{addr: "/run/s.sock"}, {tcp: true, addr: "127.0.0.1:7000"}, {tcp: true, addr: "[::1]:7001"}}, c.streams)
			require.Equal(t, []string{"/run/d.sock"}, c.dgrams)
			require.Equal(t, "/run/s.sock.leases", c.leaseFile, "next to the first frame socket without --socket")
			require.Equal(t, "/run/s.sock.natflows", c.natStateFile)
		}},
		{"frame socket relative path", []string{"--listen-stream", "vm.sock", "--listen-dgram", "d"}, func(t *testing.T, c *config) {
			require.Equal(t, []frameSockAddr{{addr: "vm.sock"}}, c.streams)
			require.Equal(t, "vm.sock.leases", c.leaseFile)
		}},
		{"tap existing", []string{"--socket", "a", "--uplink", "tap:arc0"}, func(t *testing.T, c *config) {
			require.Equal(t, "tap", c.uplink)
			require.Equal(t, "arc0", c.tapName)
			require.Equal(t, hostif.DefaultLinkNet, c.uplinkNet)
		}},
	}
	_, err := parseFlags([]string{"--version"}, io.Discard)
	require.ErrorIs(t, err, errVersion, "--version needs no socket")
	require.Contains(t, version(), "vhost-arcnet ")
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, io.Discard)
			require.NoError(t, err)
			tc.want(t, c)
		})
	}

	for _, tc := range badFlagCases {
		t.Run("bad "+tc.name, func(t *testing.T) {
			_, err := parseFlags(tc.args, io.Discard)
			require.Error(t, err)
			require.True(t, strings.Contains(err.Error(), tc.msg), "error %q lacks %q", err, tc.msg)
		})
	}
}

// badFlagCases are command lines parseFlags refuses, with a part of the
// error; TestConfigFileSameChecksAsFlags runs them as config files too.
var badFlagCases = []struct {
	name string
	args []string
	msg  string
}{
	{"nothing", nil, "nothing to serve"},
	{"empty socket", []string{"--socket", ""}, "empty path"},
	{"stray arg", []string{"--socket", "a", "extra"}, "unexpected argument"},
	{"mode", []string{"--socket", "a", "--socket-mode", "999"}, "--socket-mode"},
	{"mode big", []string{"--socket", "a", "--socket-mode", "7777"}, "--socket-mode"},
	{"uplink", []string{"--socket", "a", "--uplink", "carrier-pigeon"}, "unknown kind"},
	{"xdp without interface", []string{"--socket", "a", "--uplink", "xdp"}, "want xdp:IFACE"},
	{"xdp interface name", []string{"--socket", "a", "--uplink", "xdp:a/b"}, "interface name"},
	{"xdp ports", []string{"--socket", "a", "--uplink", "xdp:eth0", "--xdp-ports", "70-60"}, "--xdp-ports"},
	{"xdp ports low", []string{"--socket", "a", "--uplink", "xdp:eth0", "--xdp-ports", "80-90"}, "--xdp-ports"},
	{"xdp forward", []string{"--socket", "a", "--uplink", "xdp:eth0", "--forward", "tcp:8080:g:80"}, "--uplink tap"},
	{"tap name", []string{"--socket", "a", "--uplink", "tap:a/b"}, "interface name"},
	{"tap name long", []string{"--socket", "a", "--uplink", "tap:abcdefghijklmnopq"}, "interface name"},
	{"uplink net", []string{"--socket", "a", "--uplink", "tap", "--uplink-net", "10.0.0.0/31"}, "--uplink-net"},
	{"uplink net v6", []string{"--socket", "a", "--uplink", "tap", "--uplink-net", "fd00::/126"}, "--uplink-net"},
	{"uplink net overlap", []string{"--socket", "a", "--uplink", "tap", "--uplink-net", "192.168.127.252/30"}, "overlaps --subnet"},
	{"forward syntax", []string{"--socket", "a", "--uplink", "tap", "--forward", "tcp:80"}, "--forward"},
	{"forward proto", []string{"--socket", "a", "--uplink", "tap", "--forward", "sctp:80:g:80"}, "--forward"},
	{"forward port", []string{"--socket", "a", "--uplink", "tap", "--forward", "tcp:70000:g:80"}, "--forward"},
	{"forward twice", []string{"--socket", "a", "--uplink", "tap", "--forward", "tcp:8080:g:80", "--forward", "tcp:127.0.0.1:8080:h:22"}, "same tcp port"},
	{"forward without uplink", []string{"--socket", "a", "--forward", "tcp:8080:g:80"}, "--uplink tap"},
	{"masquerade without uplink", []string{"--socket", "a", "--masquerade"}, "--uplink tap"},
	{"nat flows", []string{"--socket", "a", "--uplink", "tap", "--nat-max-flows", "1"}, "--nat-max-flows"},
	{"pcap without switch", []string{"--socket", "a", "--uplink", "sink", "--pcap", "x.pcap"}, "--pcap"},
	{"source size", []string{"--socket", "a", "--source-size", "10"}, "--source-size"},
	{"pairs", []string{"--socket", "a", "--queue-pairs", "0"}, "--queue-pairs"},
	{"pairs big", []string{"--socket", "a", "--queue-pairs", "17"}, "--queue-pairs"},
	{"backlog negative", []string{"--socket", "a", "--rx-backlog", "-1"}, "--rx-backlog"},
	{"backlog big", []string{"--socket", "a", "--rx-backlog", "65537"}, "--rx-backlog"},
	{"mtu", []string{"--socket", "a", "--mtu", "20"}, "--mtu"},
	{"link speed", []string{"--socket", "a", "--link-speed", "4294967296"}, "--link-speed"},
	{"lease time syntax", []string{"--socket", "a", "--lease-time", "soon"}, "--lease-time"},
	{"nat flows per guest", []string{"--socket", "a", "--uplink", "tap", "--nat-max-flows", "100", "--nat-max-flows-per-guest", "200"}, "--nat-max-flows-per-guest"},
	{"metrics no host", []string{"--socket", "a", "--metrics", ":9100"}, "--metrics"},
	{"metrics no port", []string{"--socket", "a", "--metrics", "127.0.0.1"}, "--metrics"},
	{"metrics port", []string{"--socket", "a", "--metrics", "127.0.0.1:http"}, "--metrics"},
	{"metrics host name", []string{"--socket", "a", "--metrics", "metrics.example:9100"}, "--metrics"},
	{"empty connect", []string{"--connect", ""}, "empty path"},
	{"bool", []string{"--socket", "a", "--poll=maybe"}, "--poll"},
	{"queue pairs syntax", []string{"--socket", "a", "--queue-pairs", "two"}, "--queue-pairs"},
	{"level", []string{"--socket", "a", "--log-level", "loud"}, "--log-level"},
	{"format", []string{"--socket", "a", "--log-format", "xml"}, "--log-format"},
	{"subnet", []string{"--socket", "a", "--subnet", "10.0.0.0/31"}, "--subnet"},
	{"subnet v6", []string{"--socket", "a", "--subnet", "fd00::/64"}, "--subnet"},
	{"domain", []string{"--socket", "a", "--domain", ""}, "--domain"},
	{"upstream", []string{"--socket", "a", "--dns-upstream", "dns.example"}, "--dns-upstream"},
	{"reserve", []string{"--socket", "a", "--reserve", "nonsense"}, "--reserve"},
	{"reserve outside", []string{"--socket", "a", "--reserve", "52:54:00:00:00:07=10.9.9.9"}, "outside"},
	{"lease time", []string{"--socket", "a", "--lease-time", "5s"}, "--lease-time"},
	{"dns record form", []string{"--socket", "a", "--dns-record", "db"}, `--dns-record "db": want NAME=ADDR`},
	{"dns record dotted", []string{"--socket", "a", "--dns-record", "db.example=192.168.127.20"}, "want one label"},
	{"dns record reserved", []string{"--socket", "a", "--dns-record", "gateway=192.168.127.20"}, "the gateway's own"},
	{"dns record v6", []string{"--socket", "a", "--dns-record", "db=fd00::1"}, "unicast IPv4"},
	{"dns record multicast", []string{"--socket", "a", "--dns-record", "db=224.0.0.1"}, "unicast IPv4"},
	{"dns record no switch", []string{"--socket", "a", "--uplink", "sink", "--dns-record", "db=192.168.127.20"}, "--dns-record needs the guest network"},
	{"mac form", []string{"--socket", "/s", "--mac", "52:54:00:00:00:10"}, "PATH=MAC"},
	{"mac path", []string{"--socket", "/s", "--mac", "/t=52:54:00:00:00:10"}, "not a --socket"},
	{"mac multicast", []string{"--socket", "/s", "--mac", "/s=01:00:5e:00:00:01"}, "unicast"},
	{"mac bad", []string{"--socket", "/s", "--mac", "/s=zz"}, "48-bit"},
	{"unknown flag", []string{"--sockets", "a"}, "not defined"},
	{"empty stream", []string{"--listen-stream", ""}, "empty path"},
	{"stream tcp host", []string{"--listen-stream", "example.org:80"}, "--listen-stream"},
	{"empty dgram", []string{"--listen-dgram", ""}, "empty path"},
	{"frame socket measurement uplink", []string{"--listen-dgram", "/d", "--uplink", "sink"}, "--listen-dgram attaches guests to the switch"},
	{"frame socket twice", []string{"--socket", "/d", "--listen-dgram", "/d"}, "given twice"},
}
