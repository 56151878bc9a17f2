//go:build linux

package qemu

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHarnessSlirp proves the harness without vhost-arcnet: a guest on
// QEMU's user-mode network (everything stays inside QEMU) gets 10.0.2.15 by
// DHCP, pings the gateway 10.0.2.2, sends a raw frame, and waits on the
// console for the test to wake it with a value it then uses.
func TestHarnessSlirp(t *testing.T) {
	t.Parallel()
	env := NewEnv(t, 1)
	// An ARP request for 10.0.2.2 from the guest's MAC, built here and
	// sent by arcnet-rawframe from an AF_PACKET socket.
	mac := "52:54:00:ac:ff:01"
	frame := "ffffffffffff" + strings.ReplaceAll(mac, ":", "") + "0806" +
		"0001080006040001" + strings.ReplaceAll(mac, ":", "") + "0a00020f" + "000000000000" + "0a000202"
	g := env.StartGuest(GuestConfig{
		Name:  "slirp",
		Net:   UserNet{},
		MAC:   mac,
		Test:  "dhcp,ping:10.0.2.2,raw:" + frame + ":2,wait:go,ping:@target:1",
		Knobs: []string{"pings=2"},
	})
	require.NoError(t, g.AwaitWait("go", 90*time.Second))
	require.NoError(t, g.Wake("go", "target=10.0.2.2"))
	c := g.Wait()
	require.True(t, c.Passed(), "guest: %s", c.Result())

	nic, ok := c.First("NIC")
	require.True(t, ok)
	require.Equal(t, "virtio_net", nic.Get("driver"))
	require.Equal(t, mac, nic.Get("mac"))
	ip, ok := c.First("IP")
	require.True(t, ok)
	require.Equal(t, "10.0.2.15", ip.Get("ip"))
	require.Equal(t, "10.0.2.2", ip.Get("server")) // restrict=on: slirp offers no router
	raw, ok := c.First("RAW")
	require.True(t, ok)
	require.Equal(t, "2", raw.Get("sent"))
	pings := c.All("PING")
	require.Len(t, pings, 2)
	require.Equal(t, "10.0.2.2", pings[1].Get("target"))
	rx, err := c.Stats("rx_packets")
	require.NoError(t, err)
	require.NotZero(t, rx)
}

// slirpFwdNet is QEMU's user-mode network with restrict=on plus forwarding
// rules, which restrict=on leaves working: every byte still goes only
// between QEMU and the loopback of this machine.
type slirpFwdNet struct {
	fwd []string // ",hostfwd=..." and ",guestfwd=..." options
}

func (n slirpFwdNet) qemuArgs() ([]string, bool) {
	return []string{"-netdev", "user,id=n0,restrict=on" + strings.Join(n.fwd, "")}, false
}

// freeLoopbackPort returns a TCP port of 127.0.0.1 that was free a
// moment ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestHarnessSlirpServices proves the guest's client and server steps
// without vhost-arcnet, on QEMU's user-mode network: the guest downloads a
// file from an HTTP server of this test on 127.0.0.1 (guestfwd to
// 10.0.2.100:80) and checks its SHA-256, and serves TCP that the test
// reaches through hostfwd on 127.0.0.1.
func TestHarnessSlirpServices(t *testing.T) {
	t.Parallel()
	env := NewEnv(t, 1)
	blob := newTestBlob(1, 1<<20)
	var hits atomic.Int64
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	// guestfwd's tcp: target is one chardev connection QEMU opens when it
	// starts, long before the guest's wget: the server must not time out
	// waiting for that connection's first request (a 10 s
	// ReadHeaderTimeout closed it when a loaded machine took over 10 s to
	// boot the guest, and the wget then got no answer).
	srv := &http.Server{Handler: blob.Handler(&hits), ReadHeaderTimeout: guestTimeout}
	go srv.Serve(l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	tcpPort := freeLoopbackPort(t)
	g := env.StartGuest(GuestConfig{
		Name: "slirp-svc",
		Net: slirpFwdNet{fwd: []string{
			",guestfwd=tcp:10.0.2.100:80-tcp:" + l.Addr().String(),
			fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:8080", tcpPort),
		}},
		Test:    "dhcp,wget:http://10.0.2.100/blob.bin:" + blob.SHA256 + ",tcpserve:8080,udpserve:7777,wait:done",
		Knobs:   []string{"hostname=slirp-svc"},
		Timeout: guestTimeout,
	})
	require.NoError(t, g.AwaitWait("done", stepTimeout))
	c := g.Console()
	w, ok := c.First("WGET")
	require.True(t, ok)
	require.Equal(t, "http://10.0.2.100/blob.bin", w.Get("url"))
	require.Equal(t, "200", w.Get("status"), "%s", w)
	require.Equal(t, strconv.Itoa(len(blob.Data)), w.Get("bytes"), "%s", w)
	require.Equal(t, blob.SHA256, w.Get("sha256"), "%s", w)
	require.EqualValues(t, 1, hits.Load())

	hello, echo := tcpRoundTrip(t, net.Dial, fmt.Sprintf("127.0.0.1:%d", tcpPort), []byte("through hostfwd\n"))
	require.Equal(t, "slirp-svc", hello.Host, "%s", hello.Line)
	require.Equal(t, "10.0.2.2", hello.Peer.Addr().String(), "slirp's host address: %s", hello.Line)
	require.Equal(t, "through hostfwd\n", echo)
	// UDP through slirp's hostfwd with restrict=on gets no answer back
	// to the host: the echo server is checked through a forward of
	// vhost-arcnet instead (nat_linux_test.go); here only that it started.
	_, ok = c.First("UDPSERVE")
	require.True(t, ok)
	finishGuest(t, g)
}

// greeting is the first line of the guest's TCP server (tcpserve in
// guest/init.sh): "HELLO host=HOSTNAME peer=IP:PORT".
type greeting struct {
	Line string
	Host string         // the guest's hostname
	Peer netip.AddrPort // the client as the guest saw it
}

func parseGreeting(line string) greeting {
	g := greeting{Line: strings.TrimSpace(line)}
	for _, f := range strings.Fields(g.Line) {
		if v, ok := strings.CutPrefix(f, "host="); ok {
			g.Host = v
		} else if v, ok := strings.CutPrefix(f, "peer="); ok {
			g.Peer, _ = netip.ParseAddrPort(v)
		}
	}
	return g
}

// tcpRoundTrip connects to addr with dial, reads the guest's greeting line
// (tcpserve in guest/init.sh), sends msg, half-closes, and returns the
// greeting and what came back.
func tcpRoundTrip(t *testing.T, dial func(network, addr string) (net.Conn, error), addr string, msg []byte) (hello greeting, echo string) {
	t.Helper()
	var c net.Conn
	var err error
	// A forward may be ready a moment after the guest's server is.
	for i := 0; ; i++ {
		c, err = dial("tcp", addr)
		if err == nil || i == 20 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	require.NoError(t, err, "connect %s", addr)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	require.NoError(t, err, "greeting from %s", addr)
	_, err = c.Write(msg)
	require.NoError(t, err)
	require.NoError(t, c.(interface{ CloseWrite() error }).CloseWrite())
	rest, err := io.ReadAll(r)
	require.NoError(t, err, "echo from %s", addr)
	return parseGreeting(line), string(rest)
}
