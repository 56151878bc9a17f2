//go:build linux

package uplink

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/test/netns"
	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// tapName is the TAP vhost-arcnet creates first (arcnet0) in a fresh
// namespace; its "port stats" record counts tx = frames written to the TAP
// (guest -> host), rx = frames read from it (host -> guest).
const tapName = "arcnet0"

// world is one test's setup: the internet namespaces, vhost-arcnet with
// --uplink tap --masquerade in Host, and the Go guest on it.
type world struct {
	in *netns.Internet
	be *arcnet
	g  *guest
}

// setup starts everything; at the end of the test vhost-arcnet is stopped
// and must leave no link, route or nftables table in Host, and the
// namespaces must be gone.
func setup(t *testing.T, hostname string, args ...string) *world {
	t.Helper()
	return setupFeatures(t, 0, hostname, args...)
}

// setupFeatures is setup with a guest that negotiates features (0:
// everything offered).
func setupFeatures(t *testing.T, features uint64, hostname string, args ...string) *world {
	t.Helper()
	in := newInternet(t)
	be := startBackend(t, in.Host, append([]string{"--uplink", "tap", "--masquerade"}, args...)...)
	t.Cleanup(func() { stopClean(t, be) })
	g := newGuest(t, be, vhostusertest.Options{}, features, hostname)
	return &world{in: in, be: be, g: g}
}

// echoServer listens on Inet's address:port and echoes every connection,
// sending each connection's remote address on the returned channel.
func echoServer(t *testing.T, in *netns.Internet, port uint16) (netip.AddrPort, <-chan netip.AddrPort) {
	t.Helper()
	l := in.Inet.ListenTCP(t, netip.AddrPortFrom(in.InetAddr, port).String())
	peers := make(chan netip.AddrPort, 4)
	srv := netns.ServeTCP(t, l, func(c *net.TCPConn) {
		select {
		case peers <- c.RemoteAddr().(*net.TCPAddr).AddrPort():
		default: // nobody reads more than the first few
		}
		_, _ = io.Copy(c, c)
	})
	return srv, peers
}

// serveOne accepts one connection on l and runs serve on it with a 20 s
// deadline, in a goroutine; the channel gets the accept's or serve's error.
func serveOne(l *net.TCPListener, serve func(c *net.TCPConn) error) <-chan error {
	errc := make(chan error, 1)
	go func() {
		c, err := l.AcceptTCP()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		errc <- serve(c)
	}()
	return errc
}

// readAll reads want from the server over c and checks the server's end
// (srvErr).
func (c *tcpConn) readAll(t *testing.T, want []byte, srvErr <-chan error) {
	t.Helper()
	if got := c.read(len(want)); !bytes.Equal(got, want) {
		t.Fatalf("guest received other bytes than the server wrote")
	}
	if err := <-srvErr; err != nil {
		t.Fatalf("server: %v", err)
	}
}

// TestOutboundTCP: the guest's hand-made TCP connection to a kernel echo
// server in the internet namespace, through the router, the NAT and the
// host's masquerade.
func TestOutboundTCP(t *testing.T) {
	w := setup(t, "")
	srv, peers := echoServer(t, w.in, 7000)
	c := w.g.dial(srv, 40001)
	msg := pattern(5000) // four segments
	c.write(msg, false)
	if got := c.read(len(msg)); !bytes.Equal(got, msg) {
		t.Fatalf("echo differs: got %d bytes, first %x", len(got), got[:min(16, len(got))])
	}
	select {
	case p := <-peers:
		if p.Addr() != w.in.HostAddr {
			t.Errorf("server saw the connection from %v, want the masquerade address %v", p, w.in.HostAddr)
		}
		t.Logf("server saw %v (guest %v)", p, c.local)
	case <-time.After(5 * time.Second):
		t.Fatal("server never accepted")
	}
	c.rst()
	gs := w.be.stats().Gateway
	if gs.Num("router_out_translated") == 0 || gs.Num("router_in_translated") == 0 || gs.Num("nat_flows_tcp") == 0 {
		t.Errorf("gateway stats: router_out_translated=%d router_in_translated=%d nat_flows_tcp=%d, want > 0",
			gs.Num("router_out_translated"), gs.Num("router_in_translated"), gs.Num("nat_flows_tcp"))
	}
}

// TestUDPPingTraceroute: UDP echo, ICMP echo, and TTL 1 and 2 probes
// answered by "time exceeded" from the gateway and from the host.
func TestUDPPingTraceroute(t *testing.T) {
	w := setup(t, "")
	g := w.g
	inet := w.in.InetAddr

	t.Run("udp-echo", func(t *testing.T) {
		echo := w.in.UDPEcho(t, 0)
		src := netip.AddrPortFrom(g.ip, 5000)
		payload := []byte("arcnet udp echo through the uplink")
		g.send(g.out(echo.Addr(), header.ProtoUDP, 64, udp(src, echo, payload)))
		g.recvUntil(func(h virtio.NetHdr, fr []byte) bool {
			ip, l4, ok := ipv4Of(fr, header.ProtoUDP)
			if !ok || ip.Src() != echo.Addr() || ip.Dst() != g.ip || header.UDP(l4).SrcPort() != echo.Port() ||
				header.UDP(l4).DstPort() != src.Port() {
				return false
			}
			if !bytes.Equal(header.UDP(l4).Payload(), payload) {
				t.Errorf("udp echo payload %q", header.UDP(l4).Payload())
			}
			if h.Flags&virtio.NetHdrFNeedsCsum == 0 && header.UDP(l4).Checksum() != 0 && !l4ChecksumOK(ip, l4) {
				t.Errorf("udp echo: bad checksum")
			}
			return true
		}, "UDP echo")
	})

	t.Run("ping", func(t *testing.T) {
		const id, seq = 0x4242, 7
		g.send(g.out(inet, header.ProtoICMP, 64, icmpEcho(id, seq, []byte("arcnet ping"))))
		g.recvUntil(func(_ virtio.NetHdr, fr []byte) bool {
			ip, l4, ok := ipv4Of(fr, header.ProtoICMP)
			m := header.ICMPv4(l4)
			return ok && ip.Src() == inet && ip.Dst() == g.ip && m.IsValid() &&
				m.Type() == header.ICMPv4EchoReply && m.Ident() == id && m.Seq() == seq &&
				header.Checksum(l4, 0) == 0xffff
		}, "ICMP echo reply from "+inet.String())
	})

	// probe sends a UDP datagram with ttl from sport and waits for the
	// time exceeded message; it returns its source.
	probe := func(t *testing.T, ttl uint8, sport uint16) netip.Addr {
		dst := netip.AddrPortFrom(inet, 33434+uint16(ttl))
		src := netip.AddrPortFrom(g.ip, sport)
		g.send(g.out(inet, header.ProtoUDP, ttl, udp(src, dst, []byte("probe"))))
		var from netip.Addr
		g.recvUntil(func(_ virtio.NetHdr, fr []byte) bool {
			ip, l4, ok := ipv4Of(fr, header.ProtoICMP)
			m := header.ICMPv4(l4)
			if !ok || ip.Dst() != g.ip || !m.IsValid() || m.Type() != header.ICMPv4TimeExceeded {
				return false
			}
			q, ql4, err := quoted(l4)
			if err != nil {
				t.Errorf("time exceeded from %v: %v", ip.Src(), err)
				return true
			}
			if q.Src() != g.ip || q.Dst() != inet || q.Protocol() != header.ProtoUDP ||
				be16(ql4) != sport || be16(ql4[2:]) != dst.Port() {
				return false // another probe's
			}
			if header.Checksum(l4, 0) != 0xffff {
				t.Errorf("time exceeded from %v: bad ICMP checksum", ip.Src())
			}
			from = ip.Src()
			return true
		}, "ICMP time exceeded for the TTL "+strconv.Itoa(int(ttl))+" probe")
		return from
	}
	t.Run("ttl1", func(t *testing.T) {
		if from := probe(t, 1, 5001); from != gatewayIP {
			t.Errorf("TTL 1 probe: time exceeded from %v, want the gateway %v", from, gatewayIP)
		}
	})
	t.Run("ttl2", func(t *testing.T) {
		if from := probe(t, 2, 5002); from != hostEnd && from != w.in.HostAddr {
			t.Errorf("TTL 2 probe: time exceeded from %v, want the host (%v or %v)", from, hostEnd, w.in.HostAddr)
		}
	})
	gs := w.be.stats().Gateway
	t.Logf("gateway stats: router_icmp_time_exceeded=%d router_out_drop_ttl=%d router_in_translated=%d nat_icmp_errors=%d nat_flows=%d",
		gs.Num("router_icmp_time_exceeded"), gs.Num("router_out_drop_ttl"), gs.Num("router_in_translated"),
		gs.Num("nat_icmp_errors"), gs.Num("nat_flows"))
	if gs.Num("router_icmp_time_exceeded") == 0 {
		t.Errorf("router_icmp_time_exceeded is 0 after a TTL 1 probe")
	}
}

// TestInboundForward: host clients dial 127.0.0.1:HOSTPORT in Host; the
// forwards reach the guest by address and by its DHCP host name.
func TestInboundForward(t *testing.T) {
	const (
		name     = "arcguest"
		addr     = "192.168.127.50"
		portAddr = 18080
		portName = 18081
	)
	w := setup(t, name,
		"--reserve", guestMAC.String()+"="+addr,
		"--forward", "tcp:127.0.0.1:18080:"+addr+":8080",
		"--forward", "tcp:"+strconv.Itoa(portName)+":"+name+":8081")
	if w.g.ip.String() != addr {
		t.Fatalf("guest got %v, want its reservation %s", w.g.ip, addr)
	}
	for _, tc := range []struct {
		name            string
		hostPort, gport uint16
	}{{"by-address", portAddr, 8080}, {"by-hostname", portName, 8081}} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := w.in.Host.DialTCP(t, "127.0.0.1:"+strconv.Itoa(int(tc.hostPort)), 5*time.Second)
			if err != nil {
				t.Fatalf("dial the forward: %v", err)
			}
			up := pattern(6000)
			down := bytes.Repeat([]byte("from the guest "), 400)
			done := make(chan error, 1)
			got := make(chan []byte, 1)
			go func() {
				_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
				if _, err := conn.Write(up); err != nil {
					done <- err
					return
				}
				b := make([]byte, len(down))
				_, err := io.ReadFull(conn, b)
				got <- b
				done <- err
			}()
			c := w.g.accept(tc.gport)
			t.Logf("the guest sees the forwarded connection from %v to %v", c.remote, c.local)
			if c.remote.Addr() != hostEnd {
				t.Errorf("forwarded connection from %v, want the host's end of the link %v (README)", c.remote, hostEnd)
			}
			if rb := c.read(len(up)); !bytes.Equal(rb, up) {
				t.Fatalf("guest received %d bytes that differ from what the host client sent", len(rb))
			}
			c.write(down, false)
			// The client's goroutine needs the guest to keep ACKing.
			deadline := time.Now().Add(10 * time.Second)
			for {
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("host client: %v", err)
					}
					if b := <-got; !bytes.Equal(b, down) {
						t.Fatalf("host client received other bytes than the guest sent")
					}
					c.rst()
					return
				default:
				}
				if time.Now().After(deadline) {
					t.Fatal("host client did not finish")
				}
				c.pump(20 * time.Millisecond)
			}
		})
	}
}

// TestOffloads: a 63712-byte TSO frame from the guest reaches the kernel
// server whole and crosses the TAP as one frame; the server's large write
// reaches the guest (GUEST_TSO4 negotiated) as GSO frames longer than the
// MTU.
func TestOffloads(t *testing.T) {
	w := setup(t, "")
	if w.g.f.Features()&virtio.NetFHostTSO4 == 0 || w.g.f.Features()&virtio.NetFGuestTSO4 == 0 {
		t.Fatalf("vhost-arcnet offers no HOST_TSO4/GUEST_TSO4 (features %#x)", w.g.f.Features())
	}
	l := w.in.Inet.ListenTCP(t, netip.AddrPortFrom(w.in.InetAddr, 7001).String())
	up := pattern(tsoPayload)
	const downLen = 512 << 10
	down := pattern(downLen)
	srvGot := make(chan []byte, 1)
	goDown := make(chan struct{})
	srvErr := serveOne(l, func(c *net.TCPConn) error {
		b := make([]byte, len(up))
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		srvGot <- b
		select {
		case <-goDown:
		case <-time.After(15 * time.Second):
		}
		_, err := c.Write(down)
		return err
	})
	c := w.g.dial(l.Addr().(*net.TCPAddr).AddrPort(), 40002)

	w.g.txSettled()
	t1 := time.Now()
	before := w.be.stats().Ports[tapName]
	c.write(up, true)
	select {
	case b := <-srvGot:
		if !bytes.Equal(b, up) {
			t.Fatalf("the server received other bytes than the TSO frame carried")
		}
	case err := <-srvErr:
		t.Fatalf("server: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not receive the TSO frame's bytes")
	}
	w.g.txSettled()
	after := w.be.stats().Ports[tapName]
	frames, nbytes := after.Num("tx_packets")-before.Num("tx_packets"), after.Num("tx_bytes")-before.Num("tx_bytes")
	t.Logf("TAP %s: %d frames, %d bytes written for one %d-byte TSO payload (%v)", tapName, frames, nbytes, len(up),
		time.Since(t1).Round(time.Millisecond))
	if frames != 1 || nbytes < uint64(len(up)) {
		t.Errorf("TAP %s: %d frames (%d bytes) written for one TSO frame of %d payload bytes, want 1 unsegmented frame",
			tapName, frames, nbytes, len(up))
	}

	before = after
	inPlace0 := w.be.stats().Gateway.Num("tap_in_place")
	close(goDown)
	t0 := time.Now()
	c.readAll(t, down, srvErr)
	st := w.be.stats()
	after = st.Ports[tapName]
	// The GSO frames were read from the TAP straight into the guest's
	// receive buffers (datapath/inplace.go); readAll checked every byte.
	if n := st.Gateway.Num("tap_in_place") - inPlace0; n == 0 {
		t.Errorf("no frame from the TAP was read in place into the guest's buffers")
	} else {
		t.Logf("%d frames read in place", n)
	}
	t.Logf("guest received %d bytes in %d GSO frames (longest frame %d B, %d out of order) in %v; TAP %s read %d frames",
		downLen, c.gsoFrames, c.maxFrame, c.ooo, time.Since(t0).Round(time.Millisecond), tapName, after.Num("rx_packets")-before.Num("rx_packets"))
	if c.gsoFrames == 0 || c.maxFrame <= 1514 {
		t.Errorf("no GSO frame reached the guest (gso frames %d, longest %d B)", c.gsoFrames, c.maxFrame)
	}
	c.rst()
}

// TestOffloadsSegmented: a guest that did not negotiate GUEST_TSO4 (nor
// GUEST_CSUM's other offloads) gets the server's large write as frames no
// longer than the MTU, all of it in order.
func TestOffloadsSegmented(t *testing.T) {
	noGSO := ^(vhostuser.FLogAll | virtio.NetFGuestTSO4 | virtio.NetFGuestTSO6 | virtio.NetFGuestECN | virtio.NetFGuestUFO)
	w := setupFeatures(t, noGSO, "")
	in, g := w.in, w.g
	if g.f.Features()&virtio.NetFGuestTSO4 != 0 {
		t.Fatalf("GUEST_TSO4 negotiated against the guest's will (features %#x)", g.f.Features())
	}
	l := in.Inet.ListenTCP(t, netip.AddrPortFrom(in.InetAddr, 7002).String())
	const downLen = 256 << 10
	down := pattern(downLen)
	srvErr := serveOne(l, func(c *net.TCPConn) error {
		_, err := c.Write(down)
		return err
	})
	c := g.dial(l.Addr().(*net.TCPAddr).AddrPort(), 40003)
	c.readAll(t, down, srvErr)
	// Its buffers are not reserved for the TAP's GSO frames: the switch
	// segments them from the reader's memory.
	if n := w.be.stats().Gateway.Num("tap_in_place"); n != 0 {
		t.Errorf("%d frames read in place for a guest that takes no GSO frames", n)
	}
	t.Logf("guest without GUEST_TSO4 received %d bytes, %d GSO frames, longest frame %d B, %d out of order",
		downLen, c.gsoFrames, c.maxFrame, c.ooo)
	if c.gsoFrames != 0 || c.maxFrame > 1514 {
		t.Errorf("a guest without GUEST_TSO4 got GSO frames (%d) or frames longer than the MTU (longest %d B)", c.gsoFrames, c.maxFrame)
	}
	c.rst()
}

// TestBadEnvironment: a missing TAP and a forward port already bound stop
// vhost-arcnet with one line saying what to do, a non-zero exit and
// nothing left behind.
func TestBadEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		bind   string // a listener to hold in Host first
		expect string // in the error line
	}{
		{name: "missing-tap", args: []string{"--uplink", "tap:doesnotexist"}, expect: "doesnotexist"},
		{name: "forward-port-bound", bind: "127.0.0.1:18090", expect: "18090",
			args: []string{"--uplink", "tap", "--masquerade", "--forward", "tcp:127.0.0.1:18090:192.168.127.50:80"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInternet(t)
			if tc.bind != "" {
				in.Host.ListenTCP(t, tc.bind)
			}
			line := failOnce(t, in.Host, tc.args...)
			if !strings.Contains(line, tc.expect) {
				t.Errorf("error line %q does not name %q", line, tc.expect)
			}
		})
	}
}
