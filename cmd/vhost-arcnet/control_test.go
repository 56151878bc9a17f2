package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/router"
	"github.com/arcnet/vhost-arcnet/nat"
	"github.com/arcnet/vhost-arcnet/services"
	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/virtio"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// ctlEpoch is the fixed time of controlState: leases and flows expire at
// known times.
var ctlEpoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

var (
	ctlMAC1 = header.MAC{0x52, 0x54, 0x00, 0x00, 0x00, 0x01}
	ctlMAC2 = header.MAC{0x52, 0x54, 0x00, 0x00, 0x00, 0x02}
)

// testDHCP gets an address for mac from gw with host name hostname
// (DISCOVER, OFFER, REQUEST, ACK through HandleFrame).
func testDHCP(t testing.TB, gw *services.Gateway, mac header.MAC, hostname string) netip.Addr {
	t.Helper()
	bcast, any4 := netip.AddrFrom4([4]byte{255, 255, 255, 255}), netip.IPv4Unspecified()
	exchange := func(m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
		var got *dhcpv4.DHCPv4
		gw.HandleFrame(testUDPFrame(mac, header.BroadcastMAC, any4, bcast, 68, 67, m.ToBytes()), func(fr []byte) {
			ip := header.IPv4(header.Ethernet(fr).Payload())
			r, err := dhcpv4.FromBytes(header.UDP(ip.Payload()).Payload())
			require.NoError(t, err)
			got = r
		})
		require.NotNil(t, got, "no DHCP answer")
		return got
	}
	host := dhcpv4.WithOption(dhcpv4.OptHostName(hostname))
	disc, err := dhcpv4.NewDiscovery(net.HardwareAddr(mac[:]), host)
	require.NoError(t, err)
	offer := exchange(disc)
	req, err := dhcpv4.NewRequestFromOffer(offer, host)
	require.NoError(t, err)
	ack := exchange(req)
	require.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
	a, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
	return a
}

// controlState is a guest network as with --uplink tap, without the TAP
// (the router's uplink is a sink; forwards relay to natAddr), at the fixed
// time ctlEpoch: two guests with leases (one port still attached, one
// ended), three UDP flows. It returns the API on it.
func controlState(t testing.TB, natAddr netip.Addr) (*controlAPI, *network) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	clk := func() time.Time { return ctlEpoch }
	gw, err := services.NewGateway(services.Config{Logger: log, Clock: clk, DNSUpstreams: []string{"127.0.0.1:9"}})
	require.NoError(t, err)
	ext := netip.MustParseAddr("198.19.255.254")
	eng, err := nat.New(nat.Config{External: ext, GuestPrefix: gw.Subnet(), Router: gw.Addr(), MaxFlows: 1024, Clock: clk})
	require.NoError(t, err)
	n := &network{gw: gw, hp: datapath.NewHandlerPort("gateway", gw), eng: eng, natAddr: natAddr, log: log}
	n.ctx, n.stop = context.WithCancel(context.Background())
	t.Cleanup(n.close)
	n.rt, err = router.New(router.Options{
		Subnet: gw.Subnet(), GatewayAddr: gw.Addr(), GatewayMAC: header.MAC(gw.MAC()), Local: n.hp, NAT: eng,
		ExternalAddr: ext, UplinkMAC: uplinkMAC(header.MAC(gw.MAC())),
		NextHop: netip.MustParseAddr("198.19.255.253"), NextHopMAC: header.MAC{0x02, 0, 0, 0, 0, 0x53}, Logger: log,
	})
	require.NoError(t, err)
	n.rt.SetUplink(datapath.NewSink("uplink"))

	ip1 := testDHCP(t, gw, ctlMAC1, "web")
	ip2 := testDHCP(t, gw, ctlMAC2, "db")
	for i, dst := range []string{"192.0.2.1", "192.0.2.2", "198.51.100.7"} {
		src, mac, sport := ip1, ctlMAC1, uint16(5000)
		if i == 2 {
			src, mac, sport = ip2, ctlMAC2, 5001
		}
		fr := testUDPFrame(mac, header.MAC(gw.MAC()), src, netip.MustParseAddr(dst), sport, 53, []byte("query"))
		n.rt.SwitchPort().Send([]datapath.Frame{{Segs: [][]byte{fr}, Len: len(fr)}})
	}

	reg := &ports{live: map[uint64]*guest{}}
	for i, mac := range []header.MAC{ctlMAC1, ctlMAC2} {
		p, err := datapath.NewGuestPort(datapath.GuestPortOptions{Name: reg.name(), QueuePairs: 2, Logger: log})
		require.NoError(t, err)
		st := p.Stats()
		st.RxPackets.Add(uint64(10 * (i + 1)))
		st.RxBytes.Add(uint64(1000 * (i + 1)))
		st.TxPackets.Add(uint64(7 * (i + 1)))
		st.TxBytes.Add(uint64(700 * (i + 1)))
		st.Drop(datapath.DropNoBuffer, 3)
		g := &guest{port: p, info: vhostuser.SessionInfo{ID: uint64(i + 1), Role: vhostuser.RoleServer,
			Path: "/run/arcnet/vm.sock", Slot: i, MAC: mac}}
		g.rings.features.Store(virtio.FVersion1 | virtio.NetFMrgRxbuf | virtio.NetFCsum | virtio.FEventIdx)
		g.rings.running.Store(0b11)
		reg.add(g.info.ID, g)
	}
	reg.end(2)
	return &controlAPI{ports: reg, net: n, uplink: "tap", queuePairs: 2, log: log, now: clk}, n
}

// serveControl serves a on a unix socket in a temporary directory and
// returns its path.
func serveControl(t testing.TB, a *controlAPI) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "control.sock")
	c, err := startControl(path, -1, a, a.log, nil)
	require.NoError(t, err)
	t.Cleanup(c.close)
	return path
}

// unixClient is an HTTP client of the control socket at path.
func unixClient(path string) *http.Client {
	return newCtlClient(path).http
}

// call sends one request and returns the status and body.
func call(t testing.TB, path, method, url, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://vhost-arcnet"+url, rd)
	require.NoError(t, err)
	resp, err := unixClient(path).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	return resp.StatusCode, b
}

// freePort returns a TCP port free on 127.0.0.1 now.
func freePort(t testing.TB) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// The CLI's output for each command against the API on controlState, as
// golden files (go test -run TestCtlGolden -update rewrites them).
func TestCtlGolden(t *testing.T) {
	a, _ := controlState(t, netip.MustParseAddr("127.0.0.1"))
	sock := serveControl(t, a)
	port := strconv.Itoa(int(freePort(t)))
	fwd := "tcp:127.0.0.1:" + port + ":192.168.127.10:8080"
	steps := []struct {
		name string
		args []string
	}{
		{"ports", []string{"ports"}},
		{"leases", []string{"leases"}},
		{"flows", []string{"flows", "--limit", "2"}},
		{"flows_next", []string{"flows", "--limit", "2", "--after", "udp/192.168.127.2:5000/192.0.2.2:53"}},
		{"forwards_none", []string{"forwards"}},
		{"forward_add", []string{"forward", "add", fwd}},
		{"forward_add_again", []string{"forward", "add", fwd}},
		{"forward_add_same_port", []string{"forward", "add", "tcp:127.0.0.1:" + port + ":web:80"}},
		{"forward_add_bad", []string{"forward", "add", "tcp:8080:web"}},
		{"forward_add_pending", []string{"forward", "add", "udp:127.0.0.1:" + port + ":nobody:53"}},
		{"forward_rm_pending", []string{"forward", "rm", "udp:127.0.0.1:" + port + ":nobody:53", "--json"}},
		{"forwards", []string{"forwards"}},
		{"forward_rm", []string{"forward", "rm", "tcp:" + port}},
		{"forward_rm_missing", []string{"forward", "rm", fwd}},
		{"reserve_add", []string{"reserve", "add", "52:54:00:00:00:09=192.168.127.50"}},
		{"reserve_add_taken", []string{"reserve", "add", "52:54:00:00:00:08=192.168.127.50"}},
		{"reserve_add_outside", []string{"reserve", "add", "52:54:00:00:00:08=10.0.0.1"}},
		{"reservations", []string{"reservations"}},
		{"leases_json", []string{"--json", "leases"}},
		{"reserve_rm", []string{"reserve", "rm", "52:54:00:00:00:09"}},
		{"dns_add", []string{"dns", "add", "files=192.168.127.20"}},
		{"dns_add_reserved", []string{"dns", "add", "gateway=192.168.127.20"}},
		{"dns", []string{"dns"}},
		{"dns_rm", []string{"dns", "rm", "files.arcnet.internal"}},
		{"dns_rm_missing", []string{"dns", "rm", "files"}},
		{"usage_no_command", nil},
		{"usage_unknown", []string{"frobnicate"}},
		{"usage_reserve", []string{"reserve", "add", "52:54:00:00:00:09"}},
	}
	for _, s := range steps {
		var out, errb bytes.Buffer
		code := ctlCommand(append([]string{"--control", sock}, s.args...), &out, &errb)
		got := fmt.Sprintf("$ vhost-arcnet ctl %s\nexit %d\n--- stdout\n%s--- stderr\n%s",
			strings.Join(s.args, " "), code, out.String(), errb.String())
		// The port has 5 digits (an ephemeral one): so has its stand-in,
		// and the columns stay aligned.
		got = regexp.MustCompile(`\b`+port+`\b`).ReplaceAllString(got, "HPORT")
		checkGolden(t, "ctl_"+s.name, got)
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "go test ./cmd/vhost-arcnet -run %s -update writes it", t.Name())
	require.Equal(t, string(want), got, "%s (-update rewrites it)", path)
}

// Bad requests get a JSON error with a status that says what kind of
// mistake it was and a message that says what to do.
func TestControlErrors(t *testing.T) {
	a, _ := controlState(t, netip.MustParseAddr("127.0.0.1"))
	sock := serveControl(t, a)
	for _, tc := range []struct {
		method, url, body string
		code              int
		msg               string
	}{
		{"GET", "/v2/ports", "", 404, "no such endpoint (the API has /v1/ports"},
		{"GET", "/", "", 404, "no such endpoint"},
		{"POST", "/v1/ports", "{}", 405, "method not allowed (allowed: GET)"},
		{"PUT", "/v1/forwards", "{}", 405, "allowed: GET, POST"},
		{"POST", "/v1/forwards", "", 400, `empty request body: want JSON such as {"spec": "tcp:8080:web:80"}`},
		{"POST", "/v1/forwards", "not json", 400, "request body: invalid character"},
		{"POST", "/v1/forwards", `{"spek": "tcp:1:a:2"}`, 400, `unknown field "spek"`},
		{"POST", "/v1/forwards", `{"spec": "tcp:1:a:2"} {}`, 400, "more than one JSON value"},
		{"POST", "/v1/forwards", `{"spec": "sctp:1:a:2"}`, 400, `protocol "sctp": want tcp or udp`},
		{"DELETE", "/v1/forwards/tcp:1", "", 404, "no forward tcp:1: there are none"},
		{"DELETE", "/v1/forwards/nonsense", "", 400, "want the forward's spec"},
		{"GET", "/v1/flows?limit=0", "", 400, "limit=\"0\": want 1..1000"},
		{"GET", "/v1/flows?limit=5000", "", 400, "want 1..1000"},
		{"GET", "/v1/flows?after=tcp/x", "", 400, "want a flow's id, PROTO/SRC/DST"},
		{"GET", "/v1/flows?page=2", "", 400, `unknown parameter "page"`},
		{"POST", "/v1/reservations", `{"mac": "zz", "address": "192.168.127.9"}`, 400, "invalid MAC address"},
		{"POST", "/v1/reservations", `{"mac": "52:54:00:00:00:01", "address": "192.168.127.1"}`, 409, "gateway's address"},
		{"DELETE", "/v1/reservations/52:54:00:00:00:77", "", 404, "reservation for 52:54:00:00:00:77: not found"},
		{"DELETE", "/v1/reservations/xyz", "", 400, "want a MAC address"},
		{"POST", "/v1/dns", `{"name": "gateway", "address": "192.168.127.9"}`, 409, "the gateway's own name"},
		{"POST", "/v1/dns", `{"name": "a.b", "address": "192.168.127.9"}`, 400, "want one label under arcnet.internal"},
		{"POST", "/v1/dns", `{"name": "x", "address": "::1"}`, 400, "want an IPv4 address"},
		{"DELETE", "/v1/dns/nothere", "", 404, "DNS record nothere.arcnet.internal: not found"},
	} {
		code, b := call(t, sock, tc.method, tc.url, tc.body)
		var e apiError
		require.NoError(t, json.Unmarshal(b, &e), "%s %s: %s", tc.method, tc.url, b)
		require.Equal(t, tc.code, code, "%s %s: %s", tc.method, tc.url, e.Error)
		require.Contains(t, e.Error, tc.msg, "%s %s", tc.method, tc.url)
	}

	// A measurement uplink has no guest network: a conflict, said so.
	m := serveControl(t, &controlAPI{ports: &ports{live: map[uint64]*guest{}}, uplink: "sink", queuePairs: 1,
		log: slog.New(slog.DiscardHandler), now: time.Now})
	for _, u := range []string{"/v1/leases", "/v1/flows", "/v1/forwards", "/v1/reservations", "/v1/dns"} {
		code, b := call(t, m, "GET", u, "")
		require.Equal(t, http.StatusConflict, code, u)
		require.Contains(t, string(b), "runs with --uplink sink, which has no guest network", u)
	}
	code, b := call(t, m, "GET", "/v1/ports", "")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"ports": []}`, string(b))

	// --uplink none: no flows, and forwards need an uplink.
	a.net.eng = nil
	code, b = call(t, sock, "GET", "/v1/flows", "")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"flows": [], "total": 0, "next": ""}`, string(b))
	a.uplink = "none"
	code, b = call(t, sock, "POST", "/v1/forwards", `{"spec": "tcp:8080:web:80"}`)
	require.Equal(t, http.StatusConflict, code)
	require.Contains(t, string(b), "need an uplink that leaves the host: this vhost-arcnet runs with --uplink none")
}

// Flows come a page at a time, in the order of their IDs, each once.
func TestControlFlowPages(t *testing.T) {
	a, n := controlState(t, netip.MustParseAddr("127.0.0.1"))
	for i := range 22 {
		fr := testUDPFrame(ctlMAC1, header.MAC(n.gw.MAC()), netip.MustParseAddr("192.168.127.2"),
			netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), uint16(6000+i), 443, []byte("x"))
		n.rt.SwitchPort().Send([]datapath.Frame{{Segs: [][]byte{fr}, Len: len(fr)}})
	}
	sock := serveControl(t, a)
	var ids []string
	after := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10)
		code, b := call(t, sock, "GET", "/v1/flows?limit=10&after="+after, "")
		require.Equal(t, 200, code, string(b))
		var p apiFlows
		require.NoError(t, json.Unmarshal(b, &p))
		require.Equal(t, 25, p.Total)
		require.LessOrEqual(t, len(p.Flows), 10)
		for _, f := range p.Flows {
			ids = append(ids, f.ID)
			require.Equal(t, "udp", f.Proto)
			require.Equal(t, "guest", f.Side)
			require.Positive(t, f.ExpiresIn)
		}
		if p.Next == "" {
			break
		}
		require.Equal(t, p.Flows[len(p.Flows)-1].ID, p.Next)
		after = p.Next
	}
	require.Len(t, ids, 25)
	for i := 1; i < len(ids); i++ {
		a, _ := parseFlowKey(ids[i-1])
		b, _ := parseFlowKey(ids[i])
		require.Negative(t, a.compare(b), "%s before %s", ids[i-1], ids[i])
	}
}

// The control socket is the owner's only, replaces a stale socket, refuses
// to replace anything else, and is removed at close.
func TestControlSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "ctl")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "control.sock")
	log := slog.New(slog.DiscardHandler)
	a := &controlAPI{ports: &ports{live: map[uint64]*guest{}}, uplink: "none", queuePairs: 1, log: log, now: time.Now}

	// A stale socket (nobody accepts on it) is replaced.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	ln.SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
	c, err := startControl(path, -1, a, log, nil)
	require.NoError(t, err)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// A second one on the same path is refused while the first serves.
	_, err = startControl(path, -1, a, log, nil)
	require.ErrorContains(t, err, "in use by another process")
	code, _ := call(t, path, "GET", "/v1/ports", "")
	require.Equal(t, 200, code)

	c.close()
	_, err = os.Lstat(path)
	require.True(t, os.IsNotExist(err), "the socket is removed at close")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "no temporary files left")

	// A regular file is never replaced.
	require.NoError(t, os.WriteFile(path, []byte("x"), 0o600))
	_, err = startControl(path, -1, a, log, nil)
	require.ErrorContains(t, err, "exists and is not a socket")

	// The client says what to do when nobody answers.
	var out, errb bytes.Buffer
	require.Equal(t, 1, ctlCommand([]string{"--control", filepath.Join(dir, "nobody.sock"), "ports"}, &out, &errb))
	require.Regexp(t, regexp.MustCompile(`cannot reach vhost-arcnet at .*nobody.sock: .* \(is it running with --control .*nobody.sock\?\)`), errb.String())
	errb.Reset()
	require.Equal(t, 2, ctlCommand([]string{"ports"}, &out, &errb))
	require.Contains(t, errb.String(), "give the control socket: --control PATH")
}

// ctl --config FILE finds the socket in the config file's control key.
func TestCtlConfigFile(t *testing.T) {
	a, _ := controlState(t, netip.MustParseAddr("127.0.0.1"))
	sock := serveControl(t, a)
	cfg := filepath.Join(t.TempDir(), "vm.toml")
	require.NoError(t, os.WriteFile(cfg, []byte("control = \""+sock+"\"\n"), 0o600))
	var out, errb bytes.Buffer
	require.Equal(t, 0, ctlCommand([]string{"--config", cfg, "reservations"}, &out, &errb), errb.String())
	require.Equal(t, "MAC  ADDRESS\n", out.String())
	require.NoError(t, os.WriteFile(cfg, []byte("mtu = 9000\n"), 0o600))
	require.Equal(t, 2, ctlCommand([]string{"--config", cfg, "ports"}, &out, &errb))
	require.Contains(t, errb.String(), "has no control key")
}
