//go:build linux

package netns

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNewCleanup checks that a namespace, its veth and its background
// process exist during a test and are gone after it.
func TestNewCleanup(t *testing.T) {
	skipUnlessRoot(t)
	var (
		a, b *NS
		cmd  *exec.Cmd
	)
	t.Run("inner", func(t *testing.T) {
		a, b = New(t, "nst"), New(t, "nst")
		assert.True(t, strings.HasPrefix(a.Name, "nst-"), a.Name)
		assert.NotEqual(t, a.Name, b.Name)
		assert.True(t, Exists(a.Name))
		assert.Contains(t, a.Run(t, "ip", "link", "show", "lo"), "UP")
		Veth(t, a, "va", netip.MustParsePrefix("198.51.100.1/30"), b, "vb", netip.MustParsePrefix("198.51.100.2/30"))
		assert.True(t, LinkExists(a, "va"))
		assert.True(t, LinkExists(b, "vb"))
		assert.False(t, LinkExists(a, "vb"))
		assert.Contains(t, b.Run(t, "ip", "-4", "addr", "show", "dev", "vb"), "198.51.100.2/30")
		cmd = a.StartBackground(t, "sleep", "600")
		assert.Contains(t, list(t), a.Name)
	})
	assert.False(t, Exists(a.Name), "namespace left behind")
	assert.False(t, Exists(b.Name), "namespace left behind")
	assert.False(t, LinkExists(a, "va"))
	assert.NotContains(t, list(t), a.Name)
	assert.NotContains(t, list(t), b.Name)
	// The process is reaped: signalling its PID fails.
	assert.ErrorIs(t, cmd.Process.Signal(syscall.Signal(0)), os.ErrProcessDone)
	// The veth never appeared in the test's own namespace.
	_, err := net.InterfaceByName("va")
	assert.Error(t, err)
}

// list is `ip netns list`.
func list(t *testing.T) string {
	out, err := ip("netns", "list")
	require.NoError(t, err, out)
	return out
}

func TestDo(t *testing.T) {
	skipUnlessRoot(t)
	inet := NewInternet(t)
	var names []string
	require.NoError(t, inet.Host.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	}))
	assert.ElementsMatch(t, []string{"lo", inet.HostLink}, names)
	// The calling goroutine's thread stayed where it was.
	_, err := net.InterfaceByName(inet.HostLink)
	assert.Error(t, err)

	// A listener made in Host is served in Host: ss there shows it.
	l := inet.Host.ListenTCP(t, "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	assert.Contains(t, inet.Host.Run(t, "ss", "-ltnH"), "127.0.0.1:"+strconv.Itoa(port))
}

func TestInternet(t *testing.T) {
	skipUnlessRoot(t)
	inet := NewInternet(t)
	assert.Equal(t, "203.0.113.1", inet.HostAddr.String())
	assert.Equal(t, "203.0.113.2", inet.InetAddr.String())
	assert.Contains(t, inet.Host.Run(t, "ip", "route", "show", "default"), "via 203.0.113.2")

	t.Run("Ping", func(t *testing.T) {
		require.NoError(t, inet.Host.Ping(inet.InetAddr, 5*time.Second))
		require.NoError(t, inet.Inet.Ping(inet.HostAddr, 5*time.Second))
		// An address of the veth's network that no one has: no reply.
		require.Error(t, inet.Host.Ping(netip.MustParseAddr("203.0.113.3"), 300*time.Millisecond))
	})

	t.Run("HTTP", func(t *testing.T) {
		srv := inet.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hello from "+r.RemoteAddr)
		}))
		assert.Equal(t, "203.0.113.2:80", srv.String())
		resp, err := inet.Host.HTTPClient(t).Get("http://" + srv.String() + "/")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.True(t, strings.HasPrefix(string(body), "hello from 203.0.113.1:"), string(body))

		// curl run inside Host reaches it too.
		assert.Contains(t, inet.Host.Run(t, "curl", "-sS", "--noproxy", "*", "http://203.0.113.2/"), "hello from 203.0.113.1:")
	})

	t.Run("TCPEcho", func(t *testing.T) {
		echo := inet.TCPEcho(t, 0)
		c, err := inet.Host.DialTCP(t, echo.String(), 5*time.Second)
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		_, err = c.Write([]byte("ping\n"))
		require.NoError(t, err)
		line, err := bufio.NewReader(c).ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "ping\n", line)
		// Half-close: the server echoes the rest and closes its side.
		_, err = c.Write([]byte("tail"))
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())
		rest, err := io.ReadAll(c)
		require.NoError(t, err)
		assert.Equal(t, "tail", string(rest))
		assert.Equal(t, inet.HostAddr, netip.MustParseAddrPort(c.LocalAddr().String()).Addr())
	})

	t.Run("UDPEcho", func(t *testing.T) {
		echo := inet.UDPEcho(t, 7777)
		assert.Equal(t, "203.0.113.2:7777", echo.String())
		c := inet.Host.DialUDP(t, echo.String())
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		_, err := c.Write([]byte("datagram"))
		require.NoError(t, err)
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, "datagram", string(buf[:n]))
	})

	t.Run("DialRefused", func(t *testing.T) {
		_, err := inet.Host.DialTCP(t, "203.0.113.2:9", 2*time.Second)
		assert.Error(t, err)
		_, err = inet.Host.DialTCP(t, "inet.example:9", 2*time.Second)
		assert.ErrorContains(t, err, "want IP:PORT")
	})
}
