//go:build linux

package main

import (
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
	"github.com/arcnet/vhost-arcnet/services"
	"github.com/arcnet/vhost-arcnet/test/netns"
)

// With a real TAP (vhost-arcnet as its own process in a throwaway network
// namespace, --uplink tap, --config): a host client's TCP connection
// through a forward to the guest (the Go frontend playing a minimal TCP
// peer) carries data both ways before and after a SIGHUP whose reload
// adds a forward and a reservation; the guest keeps its session and its
// lease; the new forward listens at once. SIGTERM then removes the TAP
// and the sockets.
func TestReloadTAPKeepsConnection(t *testing.T) {
	ns := netns.New(t, "rl") // skips unless root
	dir := shortDir(t)
	sock, ctl, conf := filepath.Join(dir, "vm.sock"), filepath.Join(dir, "control.sock"), filepath.Join(dir, "vm.toml")
	const guestAddr = "192.168.127.50"
	const port1, port2 = 18086, 18087
	base := `socket = "` + sock + `"
uplink = "tap"
lease-file = "none"
dns-upstream = "127.0.0.1:9"
control = "` + ctl + `"
`
	write := func(text string) { require.NoError(t, os.WriteFile(conf, []byte(text), 0o600)) }
	write(base + `reserve = ["` + testGuestMAC.String() + `=` + guestAddr + `"]
forward = ["tcp:127.0.0.1:` + strconv.Itoa(port1) + `:vm1:8080"]
`)
	cmd := ns.Command(os.Args[0])
	cmd.Env = mainCommand().Env
	p := startMain(t, cmd, "--config", conf)
	p.waitUp(ctl)
	g := attach(t, sock)
	require.Equal(t, guestAddr, g.ip.String())

	client, err := ns.DialTCP(t, "127.0.0.1:"+strconv.Itoa(port1), 5*time.Second)
	require.NoError(t, err)
	defer client.Close()
	peer := g.acceptTCP(8080)
	_, err = client.Write([]byte("hello"))
	require.NoError(t, err)
	require.Equal(t, "hello", string(peer.recv()))
	peer.send([]byte("hi"))
	buf := make([]byte, 2)
	require.NoError(t, client.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadFull(client, buf)
	require.NoError(t, err)
	require.Equal(t, "hi", string(buf))

	// The reload adds a forward and a reservation.
	write(base + `reserve = ["` + testGuestMAC.String() + `=` + guestAddr + `", "52:54:00:00:00:09=192.168.127.60"]
forward = ["tcp:127.0.0.1:` + strconv.Itoa(port1) + `:vm1:8080", "tcp:127.0.0.1:` + strconv.Itoa(port2) + `:vm1:8081"]
`)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(p.out.String(), `msg="config reloaded"`) },
		10*time.Second, 10*time.Millisecond)
	require.Regexp(t, `msg="config reloaded" .*forwards_added=1 forwards_removed=0 reservations_added=1 .* failed=0`, p.out.String())

	// The connection carries data both ways still.
	_, err = client.Write([]byte("again"))
	require.NoError(t, err)
	require.Equal(t, "again", string(peer.recv()))
	peer.send([]byte("ok"))
	_, err = io.ReadFull(client, buf)
	require.NoError(t, err)
	require.Equal(t, "ok", string(buf))
	require.NotContains(t, p.out.String(), "guest port detached")
	require.Equal(t, g.ip, g.dhcp(testGuestMAC, "vm1", g.ip), "the lease is renewed")

	// The new forward reaches the guest.
	c2, err := ns.DialTCP(t, "127.0.0.1:"+strconv.Itoa(port2), 5*time.Second)
	require.NoError(t, err)
	defer c2.Close()
	g.waitSYN(8081)

	tap := regexp.MustCompile(`msg=uplink kind=tap device=(\S+)`).FindStringSubmatch(p.out.String())
	require.NotNil(t, tap, "the uplink's log line names the TAP")
	require.True(t, netns.LinkExists(ns, tap[1]))
	g.f.Disconnect()
	require.Equal(t, exitOK, p.stop(syscall.SIGTERM))
	require.False(t, netns.LinkExists(ns, tap[1]), "the TAP is removed at exit")
	for _, path := range []string{sock, ctl} {
		_, err := os.Lstat(path)
		require.True(t, os.IsNotExist(err), "%s is removed at exit", path)
	}
}

// tcpPeer is the guest's end of one TCP connection, just enough TCP for a
// test: in-order data, an ACK for every segment, no retransmission.
type tcpPeer struct {
	g          *testGuest
	port       uint16
	remote     netip.AddrPort
	seq, ack   uint32 // our next sequence number, theirs
	gatewayMAC header.MAC
}

// acceptTCP waits for a SYN to port and answers it.
func (g *testGuest) acceptTCP(port uint16) *tcpPeer {
	g.t.Helper()
	for {
		ip, tcp := g.recvTCP(port)
		if tcp.Flags()&header.TCPFlagSYN == 0 {
			continue
		}
		p := &tcpPeer{g: g, port: port, remote: netip.AddrPortFrom(ip.Src(), tcp.SrcPort()), seq: 1000,
			ack: tcp.Seq() + 1, gatewayMAC: header.MAC(services.DefaultMAC)}
		p.segment(header.TCPFlagSYN|header.TCPFlagACK, nil)
		p.seq++
		return p
	}
}

// recvTCP waits for a TCP segment to the guest's port.
func (g *testGuest) recvTCP(port uint16) (header.IPv4, header.TCP) {
	g.t.Helper()
	return g.recvTCPWhere(port, nil, "TCP segment")
}

// recvTCPWhere waits (10 s) for a TCP segment to the guest's port that want
// accepts (nil: any), skipping other frames; what names it in the failure.
func (g *testGuest) recvTCPWhere(port uint16, want func(header.TCP) bool, what string) (header.IPv4, header.TCP) {
	g.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		fr, err := g.f.WaitRecv()
		require.NoError(g.t, err)
		e := header.Ethernet(fr)
		if !e.IsValid() || e.EtherType() != header.EtherTypeIPv4 {
			continue
		}
		ip := header.IPv4(e.Payload())
		if !ip.IsValid() || ip.Protocol() != header.ProtoTCP || ip.Dst() != g.ip {
			continue
		}
		tcp := header.TCP(ip.Payload())
		if tcp.IsValid() && tcp.DstPort() == port && (want == nil || want(tcp)) {
			return ip, tcp
		}
	}
	g.t.Fatalf("no %s to port %d within 10 s", what, port)
	return nil, nil
}

// segment sends one segment with flags and payload.
func (p *tcpPeer) segment(flags uint8, payload []byte) {
	fr := headertest.Frame{Dst: p.gatewayMAC, Src: testGuestMAC,
		IPv4:    &headertest.IPv4Header{Src: p.g.ip, Dst: p.remote.Addr()},
		TCP:     &headertest.TCPHeader{SrcPort: p.port, DstPort: p.remote.Port(), Seq: p.seq, Ack: p.ack, Flags: flags, Window: 65535},
		Payload: payload}
	p.g.send(fr.Build())
}

// recv returns the next data the remote end sent, and ACKs it.
func (p *tcpPeer) recv() []byte {
	p.g.t.Helper()
	for {
		ip, tcp := p.g.recvTCP(p.port)
		if netip.AddrPortFrom(ip.Src(), tcp.SrcPort()) != p.remote {
			continue
		}
		data := tcp.Payload()
		switch {
		case len(data) == 0:
			continue // an ACK
		case tcp.Seq() != p.ack:
			p.segment(header.TCPFlagACK, nil) // a retransmission: ACK again
			continue
		}
		p.ack += uint32(len(data))
		p.segment(header.TCPFlagACK, nil)
		return append([]byte(nil), data...)
	}
}

// send sends data (one segment).
func (p *tcpPeer) send(data []byte) {
	p.segment(header.TCPFlagACK|header.TCPFlagPSH, data)
	p.seq += uint32(len(data))
}
