//go:build linux

package uplink

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/test/backend"
	"github.com/arcnet/vhost-arcnet/test/netns"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// The XDP uplink (issue 10) end to end, with the same Go guest and the
// same Internet as the TAP tests: vhost-arcnet runs --uplink xdp:inet0 in
// Host, so the guest's NAT address is Host's own veth address and its
// traffic never enters Host's IP stack.

// xdpLo and xdpHi are the NAT's ports (--xdp-ports) in these tests.
const (
	xdpLo    = 61000
	xdpHi    = 61999
	xdpPorts = "61000-61999"
)

// setupXDP starts vhost-arcnet with --uplink xdp on Host's veth and a
// guest on it; at the end of the test vhost-arcnet must have detached its
// program and restored the reserved ports.
func setupXDP(t *testing.T) *world {
	t.Helper()
	in := newInternet(t)
	in.Inet.TxChecksumOff(t, in.InetLink)
	before := reservedPorts(t, in.Host)
	be := startBackend(t, in.Host, "--uplink", "xdp:"+in.HostLink, "--xdp-ports", xdpPorts)
	t.Cleanup(func() {
		stopClean(t, be)
		if xdpAttached(t, in.Host, in.HostLink) {
			t.Errorf("an XDP program is still attached to %s after vhost-arcnet exited", in.HostLink)
		}
		if got := reservedPorts(t, in.Host); got != before {
			t.Errorf("ip_local_reserved_ports is %q after vhost-arcnet exited, was %q", got, before)
		}
	})
	if got := reservedPorts(t, in.Host); !strings.Contains(got, xdpPorts) {
		t.Errorf("ip_local_reserved_ports is %q while vhost-arcnet runs, want %s in it", got, xdpPorts)
	}
	if !xdpAttached(t, in.Host, in.HostLink) {
		t.Errorf("no XDP program on %s while vhost-arcnet runs", in.HostLink)
	}
	g := newGuest(t, be, vhostusertest.Options{}, 0, "")
	return &world{in: in, be: be, g: g}
}

// reservedPorts returns ns's net.ipv4.ip_local_reserved_ports.
func reservedPorts(t *testing.T, ns *netns.NS) string {
	t.Helper()
	var s string
	if err := ns.Do(func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
		s = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

// xdpAttached reports whether link in ns has an XDP program.
func xdpAttached(t *testing.T, ns *netns.NS, link string) bool {
	t.Helper()
	l, err := ns.Netlink(t).LinkByName(link)
	if err != nil {
		t.Fatalf("%s: %v", link, err)
	}
	return l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
}

func inXDPRange(p netip.AddrPort) bool { return p.Port() >= xdpLo && p.Port() <= xdpHi }

// TestXDPUplink: through --uplink xdp the guest reaches a TCP and a UDP
// server and pings in Inet, from Host's own address and a port of the
// range; a TSO upload is segmented (and its checksums completed) in
// software; a multi-megabyte download arrives intact while a host process
// talks to the same peer over the same veth.
func TestXDPUplink(t *testing.T) {
	w := setupXDP(t)
	g, in := w.g, w.in

	t.Run("tcp", func(t *testing.T) {
		srv, peers := echoServer(t, in, 7000)
		c := g.dial(srv, 40001)
		msg := pattern(5000)
		c.write(msg, false)
		if got := c.read(len(msg)); !bytes.Equal(got, msg) {
			t.Fatalf("echo differs: got %d bytes", len(got))
		}
		select {
		case p := <-peers:
			if p.Addr() != in.HostAddr || !inXDPRange(p) {
				t.Errorf("server saw the connection from %v, want %v with a port in %s", p, in.HostAddr, xdpPorts)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("server never accepted")
		}
		c.rst()
	})

	t.Run("udp", func(t *testing.T) {
		l := in.Inet.ListenUDP(t, netip.AddrPortFrom(in.InetAddr, 7002).String())
		src := netip.AddrPortFrom(g.ip, 5000)
		payload := []byte("arcnet udp through XDP")
		g.send(g.out(in.InetAddr, header.ProtoUDP, 64, udp(src, netip.AddrPortFrom(in.InetAddr, 7002), payload)))
		l.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2048)
		n, from, err := l.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], payload) || from.Addr() != in.HostAddr || !inXDPRange(from) {
			t.Fatalf("server got %q from %v, want %q from %v with a port in %s", buf[:n], from, payload, in.HostAddr, xdpPorts)
		}
		if _, err := l.WriteToUDPAddrPort([]byte("reply"), from); err != nil {
			t.Fatal(err)
		}
		g.recvUntil(func(_ virtio.NetHdr, fr []byte) bool {
			ip, l4, ok := ipv4Of(fr, header.ProtoUDP)
			return ok && ip.Src() == in.InetAddr && ip.Dst() == g.ip && header.UDP(l4).DstPort() == 5000 &&
				string(header.UDP(l4).Payload()) == "reply"
		}, "the UDP reply")
	})

	t.Run("ping", func(t *testing.T) {
		const id, seq = 0x4242, 7
		g.send(g.out(in.InetAddr, header.ProtoICMP, 64, icmpEcho(id, seq, []byte("arcnet ping"))))
		g.recvUntil(func(_ virtio.NetHdr, fr []byte) bool {
			ip, l4, ok := ipv4Of(fr, header.ProtoICMP)
			m := header.ICMPv4(l4)
			return ok && ip.Src() == in.InetAddr && m.IsValid() && m.Type() == header.ICMPv4EchoReply &&
				m.Ident() == id && m.Seq() == seq && header.Checksum(l4, 0) == 0xffff
		}, "ICMP echo reply")
	})

	t.Run("tso-upload", func(t *testing.T) {
		l := in.Inet.ListenTCP(t, netip.AddrPortFrom(in.InetAddr, 7003).String())
		up := pattern(tsoPayload)
		got := make(chan []byte, 1)
		srvErr := serveOne(l, func(c *net.TCPConn) error {
			b := make([]byte, len(up))
			_, err := io.ReadFull(c, b)
			got <- b
			return err
		})
		c := g.dial(l.Addr().(*net.TCPAddr).AddrPort(), 40003)
		c.write(up, true) // one TSO frame with a partial checksum
		if err := <-srvErr; err != nil {
			t.Fatalf("server: %v", err)
		}
		if !bytes.Equal(<-got, up) {
			t.Fatal("the server received other bytes than the TSO frame carried")
		}
		c.rst()
	})

	t.Run("download-with-host-traffic", func(t *testing.T) {
		// The host's own TCP connection to the same peer, over the same
		// veth, echoes 1 MiB at the same time as the guest's download.
		hostDone := make(chan error, 1)
		echo := in.TCPEcho(t, 0)
		hc, err := in.Host.DialTCP(t, echo.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if p := hc.LocalAddr().(*net.TCPAddr).AddrPort(); inXDPRange(p) {
			t.Errorf("the host's own connection got port %d of the reserved range", p.Port())
		}
		hostData := pattern(1 << 20)
		go func() {
			_ = hc.SetDeadline(time.Now().Add(60 * time.Second))
			go func() { _, _ = hc.Write(hostData) }()
			b := make([]byte, len(hostData))
			if _, err := io.ReadFull(hc, b); err != nil {
				hostDone <- err
				return
			}
			if !bytes.Equal(b, hostData) {
				hostDone <- io.ErrUnexpectedEOF
				return
			}
			hostDone <- nil
		}()

		const downLen = 4 << 20
		down := pattern(downLen)
		l := in.Inet.ListenTCP(t, netip.AddrPortFrom(in.InetAddr, 7004).String())
		srvErr := serveOne(l, func(c *net.TCPConn) error {
			_, err := c.Write(down)
			return err
		})
		g.timeout = 60 * time.Second
		t0 := time.Now()
		c := g.dial(l.Addr().(*net.TCPAddr).AddrPort(), 40004)
		c.readAll(t, down, srvErr)
		t.Logf("guest downloaded %d bytes through XDP in %v (%d out of order)", downLen, time.Since(t0).Round(time.Millisecond), c.ooo)
		c.rst()
		select {
		case err := <-hostDone:
			if err != nil {
				t.Errorf("the host's own connection over the same veth: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("the host's own connection did not finish")
		}
	})

	s := w.be.stats()
	up := s.Ports[in.HostLink]
	gs := s.Gateway
	t.Logf("%s: rx %d tx %d; router in %d out %d; nat flows %d", in.HostLink, up.Num("rx_packets"), up.Num("tx_packets"),
		gs.Num("router_in_translated"), gs.Num("router_out_translated"), gs.Num("nat_flows"))
	if up.Num("rx_packets") == 0 || up.Num("tx_packets") == 0 {
		t.Errorf("the XDP uplink's port stats show no traffic: %v", up)
	}
}

// TestXDPBadEnvironment: a missing interface, or one without a default
// route, stops vhost-arcnet with one line.
func TestXDPBadEnvironment(t *testing.T) {
	in := newInternet(t)
	for _, tc := range []struct {
		name   string
		ns     *netns.NS
		iface  string
		expect string
	}{
		{"missing", in.Host, "nosuch0", "interface nosuch0 does not exist"},
		{"no-gateway", in.Inet, in.InetLink, "no IPv4 default route"}, // Inet has none
		{"loopback", in.Host, "lo", "no Ethernet address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := failOnce(t, tc.ns, "--uplink", "xdp:"+tc.iface)
			if !strings.Contains(line, tc.expect) {
				t.Errorf("error line %q lacks %q", line, tc.expect)
			}
		})
	}
}

// failOnce runs vhost-arcnet with args in ns, expects it to exit non-zero
// within 20 s with exactly one error line and nothing left behind in ns,
// and returns that line.
func failOnce(t *testing.T, ns *netns.NS, args ...string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "vm.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, backend.RequireBinary(t),
		"--socket", sock, "--dns-upstream", "127.0.0.1:9"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	t.Logf("vhost-arcnet %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	if ctx.Err() != nil {
		t.Fatalf("vhost-arcnet did not exit within 20 s")
	}
	if err == nil {
		t.Errorf("vhost-arcnet exited with status 0, want non-zero")
	}
	var errLines []string
	for line := range strings.Lines(stderr.String()) {
		if strings.Contains(line, "level=ERROR") || strings.HasPrefix(line, "vhost-arcnet:") ||
			strings.Contains(line, "panic") {
			errLines = append(errLines, strings.TrimSpace(line))
		}
	}
	if l := leftovers(t, ns); len(l) > 0 {
		t.Errorf("left behind in %s: %v", ns.Name, l)
	}
	// The lease file (SOCKET.leases) stays by design (--lease-file).
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("socket %s left behind", sock)
	}
	if len(errLines) != 1 {
		t.Errorf("want exactly one error line, got %d: %q", len(errLines), errLines)
		return strings.Join(errLines, "\n")
	}
	return errLines[0]
}

// TestXDPCrash: after a SIGKILL the kernel has detached the program (it
// hangs on a BPF link owned by the process), and a new vhost-arcnet
// starts on the same NIC and routes again. The reserved ports the killed
// process left are taken back by the next one (its state file in
// /run/vhost-arcnet) and restored when that one exits.
func TestXDPCrash(t *testing.T) {
	in := newInternet(t)
	in.Inet.TxChecksumOff(t, in.InetLink)
	before := reservedPorts(t, in.Host)
	be := startBackend(t, in.Host, "--uplink", "xdp:"+in.HostLink, "--xdp-ports", xdpPorts)
	if !xdpAttached(t, in.Host, in.HostLink) {
		t.Fatal("no XDP program while vhost-arcnet runs")
	}
	if _, err := be.Kill(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for xdpAttached(t, in.Host, in.HostLink) {
		if time.Now().After(deadline) {
			t.Fatal("the XDP program is still attached 5 s after the process was killed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	crashed := reservedPorts(t, in.Host)
	t.Logf("reserved ports: before %q, after the crash %q", before, crashed)

	be2 := startBackend(t, in.Host, "--uplink", "xdp:"+in.HostLink, "--xdp-ports", xdpPorts)
	g := newGuest(t, be2, vhostusertest.Options{}, 0, "")
	srv, _ := echoServer(t, in, 7005)
	c := g.dial(srv, 40005)
	msg := pattern(3000)
	c.write(msg, false)
	if got := c.read(len(msg)); !bytes.Equal(got, msg) {
		t.Fatal("echo differs after the restart")
	}
	c.rst()
	stopClean(t, be2)
	if xdpAttached(t, in.Host, in.HostLink) {
		t.Error("XDP program left after the second process exited")
	}
	if got := reservedPorts(t, in.Host); got != before {
		t.Errorf("reserved ports %q after the second process exited, want %q (before the crash)", got, before)
	}
}
