//go:build linux

package qemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/arcnet/vhost-arcnet/test/netns"
)

// Issue 9, "QEMU end to end": a booted guest behind vhost-arcnet --uplink
// tap --masquerade reaches a namespace that plays the internet, and a
// client on the host reaches the guest through port forwards. Everything
// runs in two network namespaces the test makes (test/netns): Host, where
// vhost-arcnet runs (its TAP, routes and nftables table live there; its
// vhost-user socket is on the file system, so QEMU in the test's own
// namespace connects to it) and whose default route goes over a veth to
// Inet (203.0.113.2), which serves HTTP and UDP echo. No packet leaves
// these namespaces and the loopback.

// Defaults of --uplink tap (the link network 198.19.255.252/30).
const (
	tapHostEnd  = "198.19.255.253" // the host's end of the TAP, host.arcnet.internal
	tapNATAddr  = "198.19.255.254" // vhost-arcnet's NAT address
	masqTable   = "vhost_arcnet"   // hostif.DefaultMasqueradeTable
	tapLinkName = "arcnet"         // TAP names the kernel picks: arcnet0, arcnet1, ...
)

// natWorld is the internet namespace pair with its servers, and a
// vhost-arcnet with a TAP uplink inside Host.
type natWorld struct {
	*netns.Internet
	Blob     testBlob
	WebURL   string       // http://203.0.113.2/, serves inetPage
	BlobURL  string       // http://203.0.113.2/blob.bin, serves Blob
	WebHits  atomic.Int64 // requests to Inet's web server
	WebPeers sync.Map     // remote addresses Inet's web server saw
	// UploadURL (http://203.0.113.2/upload) takes a POST and answers
	// "sha256=HEX bytes=N" of its body.
	UploadURL string
	mu        sync.Mutex
	uploads   []upload
	// SlowUploadURL (http://203.0.113.2/slowupload) reads a POST slowly
	// and answers as UploadURL does (Slow).
	SlowUploadURL string
	Slow          slowServer
	UDPEcho       netip.AddrPort
	HostWeb       string // http://198.19.255.253:PORT/host.txt, served inside Host
	Up            *upstreamDNS
	Sock          string
	Backend       *Backend
	wrap          []string // how Backend was started: restartBackend starts another the same way
	args          []string
}

// upload is one POST to natWorld.UploadURL.
type upload struct {
	Peer   string
	Bytes  int64
	SHA256 string
}

// Uploads returns the POSTs to UploadURL so far.
func (w *natWorld) Uploads() []upload {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]upload(nil), w.uploads...)
}

// natInetName is a name the upstream DNS (inside Host) answers with Inet's
// address.
const natInetName = "www.inet.arcnet.test"

// inetPage is the page the internet's web server serves at /.
const inetPage = `<!doctype html>
<html><head><title>the internet (a network namespace)</title></head>
<body><p>Hello, guest. You reached 203.0.113.2 through vhost-arcnet's NAT and the host's masquerade.</p></body></html>
`

// hostPage is what the web server inside Host serves to guests at
// host.arcnet.internal.
const hostPage = "hello from the host side of the TAP\n"

// startNATWorld creates the namespaces and servers and starts vhost-arcnet
// in Host with --uplink tap --masquerade, the test's DNS upstream and
// extra. It registers (first, so that it runs last) a check that no
// namespace is left when the test ends.
func startNATWorld(t *testing.T, env *Env, blobSize int, extra ...string) *natWorld {
	t.Helper()
	return startNATWorldUplink(t, env, blobSize, nil, extra...)
}

// startNATWorldUplink is startNATWorld with another uplink: uplink returns
// the flags that replace --uplink tap --masquerade (nil: those).
func startNATWorldUplink(t *testing.T, env *Env, blobSize int, uplink func(*netns.Internet) []string, extra ...string) *natWorld {
	t.Helper()
	env.RequireBackend()
	w := &natWorld{}
	t.Cleanup(func() {
		if w.Internet == nil {
			return
		}
		for _, ns := range []*netns.NS{w.Host, w.Inet} {
			if netns.Exists(ns.Name) {
				t.Errorf("namespace %s left behind", ns.Name)
			}
		}
	})
	w.Internet = netns.NewInternet(t)
	w.Blob = newTestBlob(9, blobSize)
	blob := w.Blob.Handler(&w.WebHits)
	web := w.ServeHTTP(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.WebPeers.Store(r.RemoteAddr, true)
		if r.Method == http.MethodPost && r.URL.Path == "/upload" {
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(rw, err.Error(), http.StatusBadRequest)
				return
			}
			up := upload{Peer: r.RemoteAddr, Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}
			w.mu.Lock()
			w.uploads = append(w.uploads, up)
			w.mu.Unlock()
			fmt.Fprintf(rw, "sha256=%s bytes=%d\n", up.SHA256, up.Bytes)
			return
		}
		if r.URL.Path == "/" {
			w.WebHits.Add(1)
			rw.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(rw, inetPage)
			return
		}
		if r.Method == http.MethodPost && r.URL.Path == "/slowupload" {
			w.Slow.take(rw, r)
			return
		}
		blob.ServeHTTP(rw, r)
	}))
	w.WebURL = "http://" + web.Addr().String() + "/"
	w.BlobURL = w.WebURL + "blob.bin"
	w.UploadURL = w.WebURL + "upload"
	w.SlowUploadURL = w.WebURL + "slowupload"
	w.UDPEcho = w.Internet.UDPEcho(t, 7777)

	// A web server of the host, reached by guests at the host's end of
	// the TAP (which exists only once vhost-arcnet runs: listen on all).
	hl := w.Host.ListenTCP(t, "0.0.0.0:0")
	hsrv := &http.Server{ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprint(rw, hostPage) })}
	go hsrv.Serve(hl) //nolint:errcheck // ends with Close
	t.Cleanup(func() { hsrv.Close() })
	w.HostWeb = fmt.Sprintf("http://%s:%d/host.txt", tapHostEnd, hl.Addr().(*net.TCPAddr).Port)

	// The upstream DNS listens on 127.0.0.1 inside Host, where
	// vhost-arcnet can reach it.
	w.Up = startUpstreamDNSOn(t, func() (pc net.PacketConn, l net.Listener, err error) {
		err = w.Host.Do(func() error {
			pc, l, err = listenUDPTCP()
			return err
		})
		return pc, l, err
	}, map[string]string{natInetName: w.InetAddr.String()})

	w.Sock = env.Path("vu.sock")
	up := []string{"--uplink", "tap", "--masquerade"}
	if uplink != nil {
		up = uplink(w.Internet)
	}
	args := append(append([]string{"--socket", w.Sock}, up...), append([]string{"--dns-upstream", w.Up.Addr}, extra...)...)
	w.wrap, w.args = []string{"ip", "netns", "exec", w.Host.Name}, args
	w.Backend = env.StartBackendWrapped("nat", w.wrap, args...)
	return w
}

// restartBackend starts another vhost-arcnet named name as startNATWorld
// started the first (the previous one must be gone) and makes it Backend.
func (w *natWorld) restartBackend(env *Env, name string) *Backend {
	w.Backend = env.StartBackendWrapped(name, w.wrap, w.args...)
	return w.Backend
}

// tapLinks returns the names of the TAP devices vhost-arcnet made in Host.
func (w *natWorld) tapLinks(t *testing.T) []string {
	t.Helper()
	links, err := w.Host.Netlink(t).LinkList()
	require.NoError(t, err)
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, tapLinkName) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// nftTables returns the names of the IPv4 nftables tables in Host.
func (w *natWorld) nftTables(t *testing.T) []string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(w.Host.Handle())))
	require.NoError(t, err)
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	require.NoError(t, err)
	var out []string
	for _, tb := range tables {
		out = append(out, tb.Name)
	}
	return out
}

// ipForward returns Host's net.ipv4.ip_forward.
func (w *natWorld) ipForward(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(w.Host.Run(t, "cat", "/proc/sys/net/ipv4/ip_forward"))
}

// requireRunning checks what vhost-arcnet set up in Host: one TAP with the
// host's end of the link network, the masquerade table and ip_forward. It
// returns the TAP's name.
func (w *natWorld) requireRunning(t *testing.T) (tap string) {
	t.Helper()
	taps := w.tapLinks(t)
	require.Len(t, taps, 1, "TAP devices in %s: %v", w.Host.Name, taps)
	link, err := w.Host.Netlink(t).LinkByName(taps[0])
	require.NoError(t, err)
	addrs, err := w.Host.Netlink(t).AddrList(link, netlink.FAMILY_V4)
	require.NoError(t, err)
	var have []string
	for _, a := range addrs {
		have = append(have, a.IPNet.String())
	}
	require.Contains(t, have, tapHostEnd+"/30", "addresses of %s", taps[0])
	require.Contains(t, w.nftTables(t), masqTable)
	require.Equal(t, "1", w.ipForward(t), "--masquerade turns on ip_forward")
	return taps[0]
}

// requireStoppedClean stops vhost-arcnet and checks that it took its TAP and its
// nftables table with it.
func (w *natWorld) requireStoppedClean(t *testing.T) {
	t.Helper()
	_, err := w.Backend.Stop()
	require.NoError(t, err)
	requireNoErrorRecords(t, w.Backend)
	require.Empty(t, w.tapLinks(t), "TAP left in %s after exit", w.Host.Name)
	require.NotContains(t, w.nftTables(t), masqTable, "nftables table left in %s after exit", w.Host.Name)
	require.Equal(t, "0", w.ipForward(t), "ip_forward not restored in %s after exit", w.Host.Name)
	t.Logf("after exit: %s has links %s", w.Host.Name,
		strings.Join(strings.Fields(w.Host.Run(t, "ip", "-o", "-br", "link")), " "))
}

// hostDial connects from inside Host (where the forwards listen).
func (w *natWorld) hostDial(t *testing.T) func(network, addr string) (net.Conn, error) {
	return func(_, addr string) (net.Conn, error) {
		c, err := w.Host.DialTCP(t, addr, 5*time.Second)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// TestNATTAP (issue 9, QEMU end to end): a guest gets DHCP, resolves a name
// of the internet through the gateway, pings and traces the route to the
// internet (the gateway answers TTL exceeded first), downloads a 4 MiB file
// from the internet namespace over HTTP with its SHA-256 intact and uploads
// it back (the server checks the SHA-256), again through a path whose MTU
// shrank (ICMP fragmentation needed translated back to it), talks to a
// UDP echo server there, fetches a page from the host at
// host.arcnet.internal, and serves TCP and UDP that a client in Host
// reaches through forwards by hostname and by address (the guest sees the
// host's end of the link as the client) and a second guest reaches at the
// NAT address (hairpin: the guest sees the NAT address). Then the
// counters, and after exit no TAP, nftables table, ip_forward or namespace
// is left.
func TestNATTAP(t *testing.T) {
	t.Parallel()
	env := NewEnv(t, 2)
	const (
		hostname = "nat-guest"
		reserved = "192.168.127.50"
		mac      = "52:54:00:ac:09:09"
	)
	w := startNATWorld(t, env, 4<<20,
		"--reserve", mac+"="+reserved,
		"--forward", "tcp:127.0.0.1:8080:"+hostname+":80",
		"--forward", "tcp:8081:"+reserved+":80",
		"--forward", "udp:127.0.0.1:7070:"+hostname+":7")
	tap := w.requireRunning(t)
	inet := w.InetAddr.String()
	t0 := time.Now()
	g := env.StartGuest(GuestConfig{
		Name: "nat", Net: VhostUserNet{Socket: w.Sock}, MAC: mac,
		Test: "dhcp,nslookup:" + natInetName + ":" + inet +
			",nslookup:host." + netDomain + ":" + tapHostEnd +
			",ping:" + inet +
			",traceroute:" + inet + ":" + netGateway +
			",udp:" + w.UDPEcho.String() + ":5" +
			",wget:" + w.BlobURL + ":" + w.Blob.SHA256 +
			",post:" + w.UploadURL + ":1" +
			",wget:" + w.HostWeb +
			",tcpserve:80,udpserve:7,stats,wait:mtu" +
			",traceroute:" + inet + ":" + netGateway + ":1400,post:" + w.UploadURL + ":1,stats,wait:done",
		Knobs:   []string{"hostname=" + hostname},
		Timeout: guestTimeout,
	})
	// A second guest reaches the first through the forwards at the NAT
	// address (hairpin).
	nat := tapNATAddr
	peer := env.StartGuest(GuestConfig{
		Name: "nat-peer", Net: VhostUserNet{Socket: w.Sock},
		Test:    "dhcp,wait:go,tcp:" + nat + ":8080,tcp:" + nat + ":8081,udp:" + nat + ":7070:3,stats,wait:done",
		Knobs:   []string{"hostname=nat-peer"},
		Timeout: guestTimeout,
	})
	require.NoError(t, g.AwaitWait("mtu", stepTimeout))
	c := g.Console()
	t.Logf("guest steps done %.1fs after boot start", time.Since(t0).Seconds())

	ip := requireLease(t, c, "1500", "3600")
	require.Equal(t, reserved, ip.String(), "the --reserve lease")
	requireResolved(t, c, natInetName, inet)
	requireResolved(t, c, "host."+netDomain, tapHostEnd)
	require.NotZero(t, w.Up.Count("udp", "A", natInetName), "asked upstream: %v", w.Up.Queries())
	requirePingOK(t, c, inet)
	tr, ok := c.First("TRACEROUTE")
	require.True(t, ok)
	// The gateway, then the host's kernel at its end of the TAP, then the
	// destination (port unreachable, translated back to the guest).
	require.Equal(t, netGateway+","+tapHostEnd+","+inet, tr.Get("hops"), "%s", tr)
	require.Equal(t, "1", tr.Get("reached"), "%s", tr)
	udp, ok := c.First("UDP")
	require.True(t, ok)
	require.Equal(t, "5", udp.Get("received"), "%s", udp)

	wg := c.All("WGET")
	require.Len(t, wg, 2)
	require.Equal(t, "200", wg[0].Get("status"), "%s", wg[0])
	require.Equal(t, strconv.Itoa(len(w.Blob.Data)), wg[0].Get("bytes"), "%s", wg[0])
	require.Equal(t, w.Blob.SHA256, wg[0].Get("sha256"), "%s", wg[0])
	secs, _ := strconv.ParseFloat(wg[0].Get("secs"), 64)
	t.Logf("guest downloaded %d bytes from %s in %.2fs (%.1f Mbit/s, TCG guest)",
		len(w.Blob.Data), w.BlobURL, secs, float64(len(w.Blob.Data))*8/1e6/max(secs, 0.01))
	require.EqualValues(t, 1, w.WebHits.Load())
	w.WebPeers.Range(func(k, _ any) bool {
		peer, err := netip.ParseAddrPort(k.(string))
		require.NoError(t, err)
		require.Equal(t, w.HostAddr, peer.Addr(), "the internet saw %s, not Host's masqueraded address", peer)
		return true
	})
	// Outbound bulk: the guest sends the 4 MiB back.
	post, ok := c.First("POST")
	require.True(t, ok)
	require.Equal(t, "200", post.Get("status"), "%s", post)
	require.Contains(t, post.Get("reply"), "sha256="+w.Blob.SHA256, "the server's answer: %s", post)
	ups := w.Uploads()
	require.Len(t, ups, 1)
	require.Equal(t, int64(len(w.Blob.Data)), ups[0].Bytes, "uploaded bytes")
	require.Equal(t, w.Blob.SHA256, ups[0].SHA256, "uploaded bytes changed on the way")
	upPeer, err := netip.ParseAddrPort(ups[0].Peer)
	require.NoError(t, err)
	require.Equal(t, w.HostAddr, upPeer.Addr(), "the internet saw the upload from %s", upPeer)
	psecs, _ := strconv.ParseFloat(post.Get("secs"), 64)
	t.Logf("guest uploaded %d bytes to %s in %.2fs (%.1f Mbit/s, TCG guest)",
		ups[0].Bytes, w.UploadURL, psecs, float64(ups[0].Bytes)*8/1e6/max(psecs, 0.01))
	require.Equal(t, "200", wg[1].Get("status"), "%s", wg[1])
	require.Equal(t, strconv.Itoa(len(hostPage)), wg[1].Get("bytes"), "%s", wg[1])

	// Path MTU: Host's link to the internet shrinks to 1280. A 1400-byte
	// probe with DF gets "fragmentation needed" from Host's kernel, which
	// the NAT translates back to the guest, and the guest's 4 MiB upload
	// (DF, 1500-byte frames or TSO) still gets through.
	w.Host.Run(t, "ip", "link", "set", w.HostLink, "mtu", "1280")
	mark := len(c.Records)
	require.NoError(t, g.Wake("mtu"))
	require.NoError(t, g.AwaitWait("done", stepTimeout), "after the MTU of %s went down to 1280", w.HostLink)
	after := &Console{Records: g.Console().Records[mark:]}
	ptr, ok := after.First("TRACEROUTE")
	require.True(t, ok)
	require.Equal(t, "1280", ptr.Get("fragneeded"), "no ICMP fragmentation needed reached the guest: %s", ptr)
	ups = w.Uploads()
	require.Len(t, ups, 2)
	require.Equal(t, w.Blob.SHA256, ups[1].SHA256, "upload through the 1280 bottleneck")
	ppost, _ := after.First("POST")
	t.Logf("path MTU: %s; upload through it in %ss", ptr, ppost.Get("secs"))

	// Hairpin: the other guest at the NAT address; the target sees the NAT
	// address as the client. Before any host client used the forwards:
	// vhost-arcnet programs them into the NAT engine at start (and as
	// leases change), not only when a host connection arrives.
	require.NoError(t, peer.AwaitWait("go", stepTimeout))
	require.NoError(t, peer.Wake("go"))
	require.NoError(t, peer.AwaitWait("done", stepTimeout), "hairpin through the forwards")
	pc := peer.Console()
	tcps := pc.All("TCP")
	require.Len(t, tcps, 2)
	for _, r := range tcps {
		require.Equal(t, "1", r.Get("echoed"), "%s", r)
		hello := parseGreeting(strings.ReplaceAll(r.Get("hello"), ",", " "))
		require.Equal(t, hostname, hello.Host, "%s", r)
		require.Equal(t, tapNATAddr, hello.Peer.Addr().String(), "hairpin: the target guest sees the NAT address: %s", r)
	}
	pu, ok := pc.First("UDP")
	require.True(t, ok)
	require.Equal(t, "3", pu.Get("received"), "%s", pu)

	// Inbound: forwards by hostname and by address (HOSTADDR defaulted)
	// to the guest's TCP server, by hostname to its UDP echo server. The
	// guest sees the host's end of the link as the client.
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:8081"} {
		msg := bytes.Repeat([]byte("forwarded to the guest via "+addr+"\n"), 1000)
		hello, echo := tcpRoundTrip(t, w.hostDial(t), addr, msg)
		require.Equal(t, hostname, hello.Host, "through %s: %s", addr, hello.Line)
		require.Equal(t, tapHostEnd, hello.Peer.Addr().String(), "through %s: %s", addr, hello.Line)
		require.Equal(t, string(msg), echo, "through %s", addr)
	}
	u := w.Host.DialUDP(t, "127.0.0.1:7070")
	require.NoError(t, udpRoundTrip(u, []byte("udp forwarded to the guest"), 10*time.Second))

	st, err := w.Backend.WaitNetStats(func(s netStats) bool {
		return s.Gateway["router_out_translated"] > 0 && s.Gateway["router_in_translated"] > 0
	}, statsTimeout)
	require.NoError(t, err)
	t.Logf("TAP %s; gateway stats (non-zero): %s", tap, strings.Join(groupedNonZero(st.Gateway), "; "))
	for _, k := range []string{"router_out_translated", "router_in_translated", "router_icmp_time_exceeded", "router_hairpin"} {
		require.NotZero(t, st.Gateway[k], k)
	}
	// 4 MiB came in and went out through the router.
	require.Greater(t, st.Gateway["router_in_bytes"], uint64(len(w.Blob.Data)))
	require.Greater(t, st.Gateway["router_out_bytes"], uint64(len(w.Blob.Data)))
	require.NotZero(t, st.Ports[guest0].RxPackets)
	require.Zero(t, st.Ports[guest0].Drops["spoof"])

	finishGuest(t, g)
	finishGuest(t, peer)
	w.requireStoppedClean(t)
}

// udpRoundTrip sends msg on the connected socket c until the same bytes
// come back, for at most timeout.
func udpRoundTrip(c net.Conn, msg []byte, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && bytes.Equal(buf[:n], msg) {
			return nil
		}
	}
	return fmt.Errorf("no echo of %q from %v within %v", msg, c.RemoteAddr(), timeout)
}

// TestNATTAPInPlace: with one guest attached, the TAP's large frames (the
// host kernel's GSO frames of a download) are read straight into the Linux
// guest's receive buffers (datapath/inplace.go: virtio-net's mergeable
// buffers, event index), and the 4 MiB file arrives with its SHA-256
// intact.
func TestNATTAPInPlace(t *testing.T) {
	t.Parallel()
	env := NewEnv(t, 1)
	w := startNATWorld(t, env, 4<<20)
	tap := w.requireRunning(t)
	g := env.StartGuest(GuestConfig{
		Name: "inplace", Net: VhostUserNet{Socket: w.Sock},
		Test:    "dhcp,wget:" + w.BlobURL + ":" + w.Blob.SHA256 + ",stats,wait:done",
		Timeout: guestTimeout,
	})
	wg, err := g.WaitRecord(func(r Record) bool { return r.Tag == "WGET" }, stepTimeout)
	require.NoError(t, err)
	require.Equal(t, "200", wg.Get("status"), "%s", wg)
	require.Equal(t, w.Blob.SHA256, wg.Get("sha256"), "%s", wg)
	st, err := w.Backend.WaitNetStats(func(s netStats) bool { return s.Gateway["router_in_translated"] > 0 }, statsTimeout)
	require.NoError(t, err)
	t.Logf("download %s s; frames read in place %d of %d from the TAP", wg.Get("secs"),
		st.Gateway["tap_in_place"], st.Ports[tap].RxPackets)
	require.NotZero(t, st.Gateway["tap_in_place"], "no frame read in place")
}
