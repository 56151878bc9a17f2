package hostif

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/internal/testlog"
)

// Every test here talks to loopback only.

var loopback = netip.MustParseAddr("127.0.0.1")

// tcpServer serves each connection with fn on 127.0.0.1 until the test
// ends.
func tcpServer(t *testing.T, fn func(c *net.TCPConn)) netip.AddrPort {
	t.Helper()
	l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := l.AcceptTCP()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				fn(c)
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// tcpEcho echoes, and half-closes after the client did.
func tcpEcho(t *testing.T) netip.AddrPort {
	return tcpServer(t, func(c *net.TCPConn) {
		if _, err := io.Copy(c, c); err == nil {
			_ = c.CloseWrite()
		}
	})
}

// udpEcho echoes every datagram to its sender until the test ends.
func udpEcho(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				_, _ = c.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// startForwarder makes a forward of proto on 127.0.0.1 (a free port) and
// serves it until the test ends; the test fails if Serve returns an error
// or Close leaves goroutines behind.
func startForwarder(t *testing.T, proto string, opt ForwarderOptions) *Forwarder {
	t.Helper()
	spec := ForwardSpec{Proto: proto, HostAddr: loopback, Guest: "guest", GuestPort: 80}
	f, err := NewForwarder(spec, opt)
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- f.Serve(context.Background()) }()
	t.Cleanup(func() {
		require.NoError(t, f.Close())
		select {
		case err := <-errc:
			assert.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return f
}

func dialForwarder(t *testing.T, f *Forwarder) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, f.Addr().(*net.TCPAddr))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	return c
}

// expectRefused connects to f and expects the connection to be reset:
// during the handshake already, or at the first read.
func expectRefused(t *testing.T, f *Forwarder) {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, f.Addr().(*net.TCPAddr))
	if err != nil {
		assert.ErrorIs(t, err, syscall.ECONNRESET)
		return
	}
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, syscall.ECONNRESET, "a connection that cannot be relayed is reset")
}

func TestForwardTCP(t *testing.T) {
	var prepared atomic.Int32
	f := startForwarder(t, "tcp", ForwarderOptions{
		Target:  tcpEcho(t),
		Prepare: func(context.Context) error { prepared.Add(1); return nil },
	})
	for i := range 3 {
		c := dialForwarder(t, f)
		msg := []byte(fmt.Sprintf("hello %d\n", i))
		_, err := c.Write(msg)
		require.NoError(t, err)
		got := make([]byte, len(msg))
		_, err = io.ReadFull(c, got)
		require.NoError(t, err)
		assert.Equal(t, msg, got)
		// Half-close from the host side: the echo server sees EOF, echoes
		// the rest and half-closes back.
		big := bytes.Repeat([]byte("x"), 3<<20)
		go func() {
			_, _ = c.Write(big)
			_ = c.CloseWrite()
		}()
		rest, err := io.ReadAll(c)
		require.NoError(t, err)
		assert.Equal(t, len(big), len(rest))
		c.Close()
	}
	assert.Equal(t, int32(3), prepared.Load())
	require.Eventually(t, func() bool { return f.Stats().Active == 0 }, 5*time.Second, 10*time.Millisecond)
	s := f.Stats()
	assert.Equal(t, uint64(3), s.Accepted)
	want := uint64(3 * (len("hello 0\n") + 3<<20))
	assert.Equal(t, want, s.ToGuestBytes)
	assert.Equal(t, want, s.FromGuestBytes)
	assert.Zero(t, s.FailedPrepare+s.FailedDial)
}

// TestForwardTCPHalfCloseFromGuest: the guest's side half-closes first;
// the host client still sends afterwards and gets an answer.
func TestForwardTCPHalfCloseFromGuest(t *testing.T) {
	target := tcpServer(t, func(c *net.TCPConn) {
		_, _ = c.Write([]byte("banner"))
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	f := startForwarder(t, "tcp", ForwarderOptions{Target: target})
	c := dialForwarder(t, f)
	got, err := io.ReadAll(c) // EOF arrives while our side is open
	require.NoError(t, err)
	assert.Equal(t, "banner", string(got))
	_, err = c.Write([]byte("still open"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	require.Eventually(t, func() bool { return f.Stats().ToGuestBytes == uint64(len("still open")) },
		5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return f.Stats().Active == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestForwardTCPPrepareError(t *testing.T) {
	var calls atomic.Int32
	logs := &testlog.Buffer{}
	f := startForwarder(t, "tcp", ForwarderOptions{
		Target: tcpEcho(t),
		Prepare: func(context.Context) error {
			if calls.Add(1) <= 3 {
				return errors.New(`guest "web" has no DHCP lease`)
			}
			return nil
		},
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	for range 3 {
		expectRefused(t, f)
	}
	c := dialForwarder(t, f)
	_, err := c.Write([]byte("ok"))
	require.NoError(t, err)
	got := make([]byte, 2)
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	assert.Equal(t, "ok", string(got))

	s := f.Stats()
	assert.Equal(t, uint64(4), s.Accepted)
	assert.Equal(t, uint64(3), s.FailedPrepare)
	assert.Equal(t, 1, strings.Count(logs.String(), "no DHCP lease"), "logged once: %s", logs)
}

func TestForwardTCPDialError(t *testing.T) {
	// A port that was free a moment ago: connections to it are refused.
	l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	closed := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	f := startForwarder(t, "tcp", ForwarderOptions{Target: closed})
	expectRefused(t, f)
	require.Eventually(t, func() bool { return f.Stats().FailedDial == 1 }, 5*time.Second, 10*time.Millisecond)
}

func TestForwardPortInUse(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			var port uint16
			if proto == "tcp" {
				l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
				require.NoError(t, err)
				defer l.Close()
				port = l.Addr().(*net.TCPAddr).AddrPort().Port()
			} else {
				c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
				require.NoError(t, err)
				defer c.Close()
				port = c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
			}
			spec := ForwardSpec{Proto: proto, HostAddr: loopback, HostPort: port, Guest: "web", GuestPort: 80}
			_, err := NewForwarder(spec, ForwarderOptions{Target: netip.MustParseAddrPort("127.0.0.1:9")})
			require.Error(t, err)
			assert.Equal(t, fmt.Sprintf("forward %s:127.0.0.1:%d: port %d is already in use on 127.0.0.1: choose another HOSTPORT",
				proto, port, port), err.Error())
			assert.ErrorIs(t, err, syscall.EADDRINUSE)
		})
	}
}

func TestForwardBindErrors(t *testing.T) {
	// 192.0.2.1 (RFC 5737 TEST-NET-1) is no address of this host; binding
	// to it sends nothing.
	spec := ForwardSpec{Proto: "tcp", HostAddr: netip.MustParseAddr("192.0.2.1"), HostPort: 8080, Guest: "web", GuestPort: 80}
	_, err := NewForwarder(spec, ForwarderOptions{Target: netip.MustParseAddrPort("127.0.0.1:9")})
	require.Error(t, err)
	assert.Equal(t, "forward tcp:192.0.2.1:8080: 192.0.2.1 is not an address of this host: choose another HOSTADDR", err.Error())

	// The permission message, from the errno (binding a low port as
	// non-root cannot be tried portably as root).
	err = bindError("tcp:127.0.0.1:80", netip.MustParseAddrPort("127.0.0.1:80"), &net.OpError{Op: "listen", Err: syscall.EACCES})
	assert.Equal(t, "forward tcp:127.0.0.1:80: ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a HOSTPORT of 1024 or more, or grant the capability", err.Error())
	assert.ErrorIs(t, err, syscall.EACCES)

	_, err = NewForwarder(ForwardSpec{Proto: "sctp", HostPort: 1}, ForwarderOptions{Target: netip.MustParseAddrPort("127.0.0.1:9")})
	assert.ErrorContains(t, err, `protocol "sctp"`)
	_, err = NewForwarder(ForwardSpec{Proto: "tcp", HostPort: 1}, ForwarderOptions{})
	assert.ErrorContains(t, err, "no target")
}

// goroutines waits until the number of goroutines is at most n, and
// returns the last count.
func goroutines(n int) int {
	var g int
	for range 200 {
		if g = runtime.NumGoroutine(); g <= n {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return g
}

// TestForwardClose: Close ends relayed connections in the middle of a
// transfer, blocked Prepares and the UDP sessions, returns only when every
// goroutine has ended, and is idempotent.
func TestForwardClose(t *testing.T) {
	echo, uecho := tcpEcho(t), udpEcho(t)
	base := runtime.NumGoroutine()

	// TCP: one relayed connection, one blocked in Prepare.
	block := make(chan struct{})
	var n atomic.Int32
	f, err := NewForwarder(ForwardSpec{Proto: "tcp", HostAddr: loopback}, ForwarderOptions{
		Target: echo,
		Prepare: func(ctx context.Context) error {
			if n.Add(1) == 1 {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-block:
				return nil
			}
		},
	})
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- f.Serve(context.Background()) }()
	relayed := dialForwarder(t, f)
	_, err = relayed.Write([]byte("x"))
	require.NoError(t, err)
	_, err = io.ReadFull(relayed, make([]byte, 1))
	require.NoError(t, err)
	waiting := dialForwarder(t, f)
	require.Eventually(t, func() bool { return f.Stats().Active == 2 }, 5*time.Second, 10*time.Millisecond)

	// UDP: one session.
	u := startForwarder(t, "udp", ForwarderOptions{Target: uecho})
	uc, err := net.DialUDP("udp", nil, u.Addr().(*net.UDPAddr))
	require.NoError(t, err)
	defer uc.Close()
	udpRoundTrip(t, uc, "x")

	closed := make(chan struct{})
	go func() {
		assert.NoError(t, f.Close())
		assert.NoError(t, u.Close())
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	require.NoError(t, <-errc)
	assert.Zero(t, f.Stats().Active)
	assert.Zero(t, u.Stats().Active)
	for _, c := range []*net.TCPConn{relayed, waiting} {
		_, err := c.Read(make([]byte, 1))
		assert.Error(t, err, "relayed connections are closed")
	}
	require.NoError(t, f.Close(), "Close twice")
	require.NoError(t, f.Serve(context.Background()), "Serve after Close returns at once")
	_, err = net.DialTCP("tcp", nil, f.Addr().(*net.TCPAddr))
	assert.Error(t, err, "the listener is closed")
	assert.LessOrEqual(t, goroutines(base), base, "goroutines left behind")
	close(block)
}

func TestForwardServeContext(t *testing.T) {
	f, err := NewForwarder(ForwardSpec{Proto: "udp", HostAddr: loopback}, ForwarderOptions{Target: udpEcho(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f.Serve(ctx) }()
	uc, err := net.DialUDP("udp", nil, f.Addr().(*net.UDPAddr))
	require.NoError(t, err)
	defer uc.Close()
	udpRoundTrip(t, uc, "before")
	cancel()
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return when its context ended")
	}
	assert.NoError(t, f.Serve(context.Background()), "Serve after the forward closed returns at once")
	require.NoError(t, f.Close())
}

// udpRoundTrip sends msg on c and expects it back.
func udpRoundTrip(t *testing.T, c *net.UDPConn, msg string) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, msg, string(buf[:n]))
}

func TestForwardUDP(t *testing.T) {
	var prepared atomic.Int32
	f := startForwarder(t, "udp", ForwarderOptions{
		Target:  udpEcho(t),
		Prepare: func(context.Context) error { prepared.Add(1); return nil },
	})
	var clients []*net.UDPConn
	for range 3 {
		c, err := net.DialUDP("udp", nil, f.Addr().(*net.UDPAddr))
		require.NoError(t, err)
		defer c.Close()
		clients = append(clients, c)
	}
	for round := range 3 {
		for i, c := range clients {
			udpRoundTrip(t, c, fmt.Sprintf("client %d round %d", i, round))
		}
	}
	// A large datagram passes whole.
	udpRoundTrip(t, clients[0], strings.Repeat("y", 60000))

	// The first datagrams, sent before the session is ready, all arrive.
	c, err := net.DialUDP("udp", nil, f.Addr().(*net.UDPAddr))
	require.NoError(t, err)
	defer c.Close()
	for i := range 5 {
		_, err := c.Write([]byte{byte('0' + i)})
		require.NoError(t, err)
	}
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	var got []byte
	for range 5 {
		b := make([]byte, 10)
		n, err := c.Read(b)
		require.NoError(t, err)
		got = append(got, b[:n]...)
	}
	assert.Equal(t, "01234", string(got))

	// A reply is counted after it is sent, so the client may read the last
	// one before the forwarder has counted it.
	require.Eventually(t, func() bool {
		s := f.Stats()
		return s.ToGuestBytes == s.FromGuestBytes
	}, 5*time.Second, time.Millisecond, "bytes each way: %+v", f.Stats())
	s := f.Stats()
	assert.Equal(t, uint64(4), s.Accepted)
	assert.Equal(t, uint64(4), s.Active)
	assert.Equal(t, int32(4), prepared.Load(), "Prepare once per client session")
	assert.Equal(t, uint64(3*3*len("client 0 round 0")+60000+5), s.ToGuestBytes)
	assert.Zero(t, s.UDPDropped)
}

func TestForwardUDPIdle(t *testing.T) {
	f := startForwarder(t, "udp", ForwarderOptions{Target: udpEcho(t), UDPIdle: 100 * time.Millisecond})
	c, err := net.DialUDP("udp", nil, f.Addr().(*net.UDPAddr))
	require.NoError(t, err)
	defer c.Close()
	udpRoundTrip(t, c, "a")
	require.Eventually(t, func() bool { return f.Stats().UDPExpired == 1 }, 5*time.Second, 10*time.Millisecond)
	assert.Zero(t, f.Stats().Active)
	udpRoundTrip(t, c, "b") // a new session
	assert.Equal(t, uint64(2), f.Stats().Accepted)
}

func TestForwardUDPMaxSessions(t *testing.T) {
	f := startForwarder(t, "udp", ForwarderOptions{Target: udpEcho(t), MaxUDPSessions: 2})
	var clients []*net.UDPConn
	for i := range 3 {
		c, err := net.DialUDP("udp", nil, f.Addr().(*net.UDPAddr))
		require.NoError(t, err)
		defer c.Close()
		clients = append(clients, c)
		udpRoundTrip(t, c, fmt.Sprint(i))
		time.Sleep(5 * time.Millisecond) // distinct activity times
	}
	s := f.Stats()
	assert.Equal(t, uint64(1), s.UDPEvicted)
	assert.Equal(t, uint64(2), s.Active)
	// The least recently active (the first) was evicted; it comes back as
	// a new session, evicting the second.
	udpRoundTrip(t, clients[2], "again")
	udpRoundTrip(t, clients[0], "back")
	s = f.Stats()
	assert.Equal(t, uint64(2), s.UDPEvicted)
	assert.Equal(t, uint64(4), s.Accepted)
}

func TestForwardUDPPrepareError(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	logs := &testlog.Buffer{}
	f := startForwarder(t, "udp", ForwarderOptions{
		Target: udpEcho(t),
		Prepare: func(context.Context) error {
			if fail.Load() {
				return errors.New("guest web unknown")
			}
			return nil
		},
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	c, err := net.DialUDP("udp", nil, f.Addr().(*net.UDPAddr))
	require.NoError(t, err)
	defer c.Close()
	for i := range 3 {
		_, err = c.Write([]byte("lost"))
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			s := f.Stats()
			return s.FailedPrepare == uint64(i+1) && s.Active == 0
		}, 5*time.Second, time.Millisecond)
	}
	fail.Store(false)
	udpRoundTrip(t, c, "found")
	assert.Equal(t, 1, strings.Count(logs.String(), "guest web unknown"), "logged once: %s", logs)
	assert.NotZero(t, f.Stats().UDPDropped)
}
