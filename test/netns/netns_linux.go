//go:build linux

package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/arcnet/vhost-arcnet/test/backend"
)

// runDir is where `ip netns add` keeps the bind mounts that name
// namespaces (iproute2's NETNS_RUN_DIR).
const runDir = "/run/netns"

// cmdTimeout bounds every `ip` command this package runs, so that a hung
// command fails the test instead of blocking it until the go test timeout.
const cmdTimeout = 30 * time.Second

// NS is a network namespace created for one test by [New]. It is deleted
// when the test ends.
type NS struct {
	// Name is the namespace's name, as `ip netns list` shows it and as
	// `ip -n NAME` and `ip netns exec NAME` take it.
	Name string

	handle vnetns.NsHandle
}

// New creates a network namespace named prefix-RANDOM with its loopback
// up, and deletes it when the test ends (after the test's later cleanups,
// which close the sockets and stop the processes made in it). It skips the
// test unless it runs as root with iproute2's ip installed.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	skipUnlessRoot(t)
	backend.SkipIfInterrupted(t)
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("netns: random name: %v", err)
	}
	name := prefix + "-" + hex.EncodeToString(rnd[:])
	if out, err := ip("netns", "add", name); err != nil {
		t.Fatalf("netns: ip netns add %s: %v: %s", name, err, out)
	}
	n := &NS{Name: name, handle: -1}
	// If the clean-ups after an interrupt (SIGINT, SIGTERM: see
	// backend.Main) do not finish, the namespace is deleted anyway.
	forget := backend.LastResort(func() { _, _ = ip("netns", "del", name) })
	t.Cleanup(func() {
		if n.handle >= 0 {
			n.handle.Close()
		}
		if out, err := ip("netns", "del", name); err != nil {
			t.Errorf("netns: ip netns del %s: %v: %s", name, err, out)
		} else {
			forget()
		}
	})
	h, err := vnetns.GetFromName(name)
	if err != nil {
		t.Fatalf("netns: open namespace %s: %v", name, err)
	}
	n.handle = h
	if out, err := ip("-n", name, "link", "set", "lo", "up"); err != nil {
		t.Fatalf("netns: %s: set lo up: %v: %s", name, err, out)
	}
	return n
}

// skipUnlessRoot skips t unless the process is root and ip is installed.
func skipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netns: needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("netns: needs ip (apt-get install iproute2)")
	}
}

// ip runs the ip command with args and returns its combined output.
func ip(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Handle is the namespace's file descriptor, for vishvananda/netlink
// (netlink.NewHandleAt) and vishvananda/netns. It stays valid until the
// test ends; do not close it.
func (n *NS) Handle() vnetns.NsHandle { return n.handle }

// Netlink returns a netlink handle that works inside the namespace, closed
// when the test ends.
func (n *NS) Netlink(t testing.TB) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(n.handle)
	if err != nil {
		t.Fatalf("netns: %s: netlink handle: %v", n.Name, err)
	}
	t.Cleanup(h.Close)
	return h
}

// Run runs the command name with args inside the namespace (ip netns exec)
// and returns its combined output, trimmed. It fails the test with the
// output if the command fails or runs longer than 30 s.
func (n *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := n.command(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		t.Fatalf("netns: %s: %s: %v\n%s", n.Name, strings.Join(cmd.Args[4:], " "), err, s)
	}
	return s
}

// Command returns, not started, the command name with args to run inside
// the namespace (ip netns exec, which execs the command: the process's
// PID is the command's). The caller starts, stops and waits for it; see
// [NS.StartBackground] for one that is killed when the test ends.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

func (n *NS) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// StartBackground starts the command name with args inside the namespace
// with its output going to the test log, and when the test ends kills it
// (by its PID, if it still runs) and waits for it. The returned command is
// started; the caller must not Wait for it.
func (n *NS) StartBackground(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := n.Command(name, args...)
	w := &logWriter{t: t, prefix: n.Name + ": " + name + ": "}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("netns: %s: start %s: %v", n.Name, name, err)
	}
	done := make(chan struct{})
	forget := backend.LastResort(func() {
		_ = cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})
	go func() {
		_ = cmd.Wait()
		close(done)
		forget()
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
		w.stop()
	})
	return cmd
}

// logWriter copies a background process's output to the test log until
// the test's cleanup stops it (t.Log panics after the test ends).
type logWriter struct {
	t      testing.TB
	prefix string

	mu      sync.Mutex
	stopped bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		for line := range strings.Lines(string(p)) {
			w.t.Log(w.prefix + strings.TrimRight(line, "\n"))
		}
	}
	return len(p), nil
}

func (w *logWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

// Do runs fn on an OS thread switched into the namespace and returns fn's
// error. Sockets fn creates live in the namespace for their whole life.
// fn runs on its own goroutine locked to its thread: it must not start
// goroutines that create sockets, as they would not be in the namespace,
// nor call t.Fatal (return an error instead). Name lookups run on other
// goroutines too: give IP literals.
// If the thread cannot be switched back, it is discarded, never reused.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread unless the thread is back in its own
		// namespace: a goroutine that exits locked takes its thread with
		// it, so a thread stuck in n never runs other goroutines.
		orig, err := vnetns.Get()
		if err != nil {
			errc <- fmt.Errorf("netns %s: current namespace: %w", n.Name, err)
			return
		}
		defer orig.Close()
		if err := vnetns.Set(n.handle); err != nil {
			errc <- fmt.Errorf("netns %s: enter: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := vnetns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netns %s: switch back: %w", n.Name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ListenTCP listens on addr ("IP:PORT"; port 0 picks one) inside the
// namespace; the listener is closed when the test ends.
func (n *NS) ListenTCP(t testing.TB, addr string) *net.TCPListener {
	t.Helper()
	l := listen(t, n, "tcp", addr, func() (net.Listener, error) { return net.Listen("tcp", addr) })
	return l.(*net.TCPListener)
}

// ListenUDP opens a UDP socket bound to addr ("IP:PORT"; port 0 picks one)
// inside the namespace; it is closed when the test ends.
func (n *NS) ListenUDP(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c := listen(t, n, "udp", addr, func() (net.PacketConn, error) { return net.ListenPacket("udp", addr) })
	return c.(*net.UDPConn)
}

// listen runs open inside the namespace, fails the test if it fails, and
// closes what it opened when the test ends.
func listen[C io.Closer](t testing.TB, n *NS, network, addr string, open func() (C, error)) C {
	t.Helper()
	var c C
	err := n.Do(func() (err error) {
		c, err = open()
		return err
	})
	if err != nil {
		t.Fatalf("netns: %s: listen %s %s: %v", n.Name, network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// DialTCP connects from inside the namespace to addr ("IP:PORT", an IP
// literal) within timeout. The connection is closed when the test ends if
// the caller has not closed it. A failure to connect is returned, not
// fatal, so tests can check that something is unreachable.
func (n *NS) DialTCP(t testing.TB, addr string, timeout time.Duration) (*net.TCPConn, error) {
	t.Helper()
	return n.DialTCPControl(t, addr, timeout, nil)
}

// DialTCPControl is DialTCP with control (net.Dialer.Control, if not nil)
// run on the socket before it connects: options the handshake must
// already see, such as TCP_CONGESTION.
func (n *NS) DialTCPControl(t testing.TB, addr string, timeout time.Duration, control func(network, address string, c syscall.RawConn) error) (*net.TCPConn, error) {
	t.Helper()
	c, err := n.dial(context.Background(), "tcp", addr, timeout, control)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), nil
}

// DialUDP returns a UDP socket made inside the namespace and connected to
// addr ("IP:PORT", an IP literal), closed when the test ends.
func (n *NS) DialUDP(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := n.dial(context.Background(), "udp", addr, 0, nil)
	if err != nil {
		t.Fatalf("netns: %s: dial udp %s: %v", n.Name, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

// dial connects from inside the namespace. addr must be an IP literal: a
// name lookup would run on other goroutines, outside the namespace.
func (n *NS) dial(ctx context.Context, network, addr string, timeout time.Duration, control func(network, address string, c syscall.RawConn) error) (net.Conn, error) {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("netns %s: dial %s %q: want IP:PORT: %w", n.Name, network, addr, err)
	}
	var c net.Conn
	err := n.Do(func() (err error) {
		d := net.Dialer{Timeout: timeout, Control: control}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient returns an HTTP client whose connections are made inside the
// namespace. URLs must use IP literals (no name lookups); proxies from the
// environment are ignored. Its idle connections are closed when the test
// ends.
func (n *NS) HTTPClient(t testing.TB) *http.Client {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return n.dial(ctx, network, addr, 10*time.Second, nil)
		},
		DisableKeepAlives: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// Ping sends ICMP echo requests from inside the namespace to dst (IPv4)
// until one is answered or timeout passes; it returns nil on the first
// reply. It needs no ping binary (a raw ICMP socket made in the
// namespace).
func (n *NS) Ping(dst netip.Addr, timeout time.Duration) error {
	if !dst.Is4() {
		return fmt.Errorf("netns %s: ping %s: IPv4 only", n.Name, dst)
	}
	var c net.PacketConn
	if err := n.Do(func() (err error) {
		c, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return fmt.Errorf("netns %s: ping %s: %w", n.Name, dst, err)
	}
	defer c.Close()
	var rnd [2]byte
	_, _ = rand.Read(rnd[:])
	id := uint16(rnd[0])<<8 | uint16(rnd[1])
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for seq := uint16(1); time.Now().Before(deadline); seq++ {
		req := icmpEcho(8, id, seq)
		if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return fmt.Errorf("netns %s: ping %s: %w", n.Name, dst, err)
		}
		wait := min(time.Until(deadline), 500*time.Millisecond)
		_ = c.SetReadDeadline(time.Now().Add(wait))
		for {
			m, from, err := c.ReadFrom(buf)
			if err != nil {
				break // this try timed out: send the next request
			}
			// Go strips the IPv4 header of raw ip4 sockets on read.
			r := buf[:m]
			if from.(*net.IPAddr).IP.Equal(dst.AsSlice()) && len(r) >= 8 && r[0] == 0 &&
				uint16(r[4])<<8|uint16(r[5]) == id {
				return nil
			}
		}
	}
	return fmt.Errorf("netns %s: ping %s: no reply within %v", n.Name, dst, timeout)
}

// icmpEcho is an ICMP echo request (typ 8) or reply (0) with 8 bytes of
// payload and its checksum (RFC 792).
func icmpEcho(typ byte, id, seq uint16) []byte {
	b := []byte{typ, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'a', 'r', 'c', 'n', 'e', 't', 0, 0}
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	cs := ^uint16(sum)
	b[2], b[3] = byte(cs>>8), byte(cs)
	return b
}

// Veth creates a veth pair between two namespaces made by [New]: aName in
// a with address aAddr, bName in b with bAddr, both up. Neither end ever
// exists in the test's own namespace. The pair is deleted when the test
// ends.
func Veth(t testing.TB, a *NS, aName string, aAddr netip.Prefix, b *NS, bName string, bAddr netip.Prefix) {
	t.Helper()
	if a == nil || b == nil || a == b {
		t.Fatalf("netns: Veth needs two different namespaces made by New")
	}
	if out, err := ip("-n", a.Name, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name); err != nil {
		t.Fatalf("netns: veth %s/%s <-> %s/%s: %v: %s", a.Name, aName, b.Name, bName, err, out)
	}
	t.Cleanup(func() {
		// Deleting one end deletes both; a namespace deleted first took
		// them already.
		_, _ = ip("-n", a.Name, "link", "del", aName)
	})
	for _, e := range []struct {
		ns   *NS
		link string
		addr netip.Prefix
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		if e.addr.IsValid() {
			if out, err := ip("-n", e.ns.Name, "addr", "add", e.addr.String(), "dev", e.link); err != nil {
				t.Fatalf("netns: %s: addr add %s dev %s: %v: %s", e.ns.Name, e.addr, e.link, err, out)
			}
		}
		if out, err := ip("-n", e.ns.Name, "link", "set", e.link, "up"); err != nil {
			t.Fatalf("netns: %s: link set %s up: %v: %s", e.ns.Name, e.link, err, out)
		}
	}
}

// Internet is two namespaces joined by a veth pair: Host, where
// vhost-arcnet runs, whose default route goes to Inet, and Inet, which plays
// the internet. Addresses are from 203.0.113.0/24 (RFC 5737 TEST-NET-3).
type Internet struct {
	Host, Inet *NS
	// HostAddr is Host's address on the veth (203.0.113.1), InetAddr
	// Inet's (203.0.113.2), Prefix their network.
	HostAddr, InetAddr netip.Addr
	Prefix             netip.Prefix
	// HostLink and InetLink are the veth ends' names in Host and Inet.
	HostLink, InetLink string
}

// NewInternet creates an [Internet]: namespaces host-RANDOM and
// inet-RANDOM, loopbacks up, veth Host 203.0.113.1/24 <-> Inet
// 203.0.113.2/24, Host's default route via 203.0.113.2. All of it is
// deleted when the test ends. It skips the test unless root.
func NewInternet(t testing.TB) *Internet {
	t.Helper()
	i := &Internet{
		Host:     New(t, "host"),
		Inet:     New(t, "inet"),
		HostAddr: netip.MustParseAddr("203.0.113.1"),
		InetAddr: netip.MustParseAddr("203.0.113.2"),
		Prefix:   netip.MustParsePrefix("203.0.113.0/24"),
		HostLink: "inet0",
		InetLink: "host0",
	}
	Veth(t, i.Host, i.HostLink, netip.PrefixFrom(i.HostAddr, i.Prefix.Bits()),
		i.Inet, i.InetLink, netip.PrefixFrom(i.InetAddr, i.Prefix.Bits()))
	if out, err := ip("-n", i.Host.Name, "route", "add", "default", "via", i.InetAddr.String()); err != nil {
		t.Fatalf("netns: %s: default route via %s: %v: %s", i.Host.Name, i.InetAddr, err, out)
	}
	return i
}

// ServeHTTP serves h on InetAddr:80 inside Inet until the test ends and
// returns that address. Call it at most once per Internet.
func (i *Internet) ServeHTTP(t testing.TB, h http.Handler) netip.AddrPort {
	t.Helper()
	l := i.Inet.ListenTCP(t, netip.AddrPortFrom(i.InetAddr, 80).String())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// UDPEcho runs a UDP echo server on InetAddr:port inside Inet (port 0
// picks one) until the test ends and returns its address. Each datagram
// goes back to its sender unchanged.
func (i *Internet) UDPEcho(t testing.TB, port uint16) netip.AddrPort {
	t.Helper()
	c := i.Inet.ListenUDP(t, netip.AddrPortFrom(i.InetAddr, port).String())
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. ECONNREFUSED from an earlier ICMP error
			}
			_, _ = c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	// Registered after ListenUDP's cleanup, so it runs before it: close
	// first, then wait for the loop to see the closed socket.
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TCPEcho runs a TCP echo server on InetAddr:port inside Inet (port 0
// picks one) until the test ends and returns its address. Each connection
// gets back what it sends; when the client half-closes, the server
// half-closes after echoing the rest.
func (i *Internet) TCPEcho(t testing.TB, port uint16) netip.AddrPort {
	t.Helper()
	l := i.Inet.ListenTCP(t, netip.AddrPortFrom(i.InetAddr, port).String())
	return serveTCPEcho(t, l)
}

// serveTCPEcho echoes on every connection l accepts until the test ends.
func serveTCPEcho(t testing.TB, l *net.TCPListener) netip.AddrPort {
	return ServeTCP(t, l, func(c *net.TCPConn) {
		if _, err := io.Copy(c, c); err == nil {
			_ = c.CloseWrite()
		}
	})
}

// ServeTCP runs serve on every connection l accepts, each in its own
// goroutine, until the test ends, and returns l's address. A connection is
// closed when serve returns; when the test ends, l and every connection
// still open are closed and ServeTCP waits for the goroutines.
func ServeTCP(t testing.TB, l *net.TCPListener, serve func(c *net.TCPConn)) netip.AddrPort {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		closed bool
		conns  = map[*net.TCPConn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := l.AcceptTCP()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				serve(c)
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// Exists reports whether a named network namespace (as `ip netns list`
// shows it) exists.
func Exists(name string) bool {
	_, err := os.Lstat(filepath.Join(runDir, name))
	return err == nil
}

// LinkExists reports whether the namespace ns exists and has a link
// named link.
func LinkExists(ns *NS, link string) bool {
	if ns == nil || !Exists(ns.Name) {
		return false
	}
	_, err := ip("-n", ns.Name, "link", "show", "dev", link)
	return err == nil
}
