//go:build linux

package main

import (
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// streamLink is a frame-socket guest on --listen-stream.
type streamLink struct{ c net.Conn }

func (l *streamLink) Send(frame []byte) error {
	_, err := l.c.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(frame))), frame...))
	return err
}

func (l *streamLink) WaitRecv() ([]byte, error) {
	_ = l.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var n [4]byte
	if _, err := io.ReadFull(l.c, n[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(n[:]))
	_, err := io.ReadFull(l.c, b)
	return b, err
}

func (l *streamLink) Disconnect() { _ = l.c.Close() }

// dgramLink is a frame-socket guest on --listen-dgram.
type dgramLink struct{ c *net.UnixConn }

func (l *dgramLink) Send(frame []byte) error { _, err := l.c.Write(frame); return err }

func (l *dgramLink) WaitRecv() ([]byte, error) {
	_ = l.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 70000)
	n, err := l.c.Read(b)
	return b[:n], err
}

func (l *dgramLink) Disconnect() { _ = l.c.Close() }

// Two frame-socket guests, one on a stream socket and one (vfkit style,
// with the VFKT hello) on a datagram socket, on one run(): each gets a
// lease, finds the other by name through the gateway's DNS, and is listed
// by the control API; a guest that goes frees its port, and its lease
// stays.
func TestFrameSocketsRun(t *testing.T) {
	dir, err := os.MkdirTemp("", "fsrun")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	stream, dgram, ctl := filepath.Join(dir, "s.sock"), filepath.Join(dir, "d.sock"), filepath.Join(dir, "c.sock")
	cfg, err := parseFlags([]string{"--listen-stream", stream, "--listen-dgram", dgram, "--uplink", "none",
		"--lease-file", "none", "--dns-upstream", "127.0.0.1:9", "--control", ctl, "--socket-mode", "0660"}, io.Discard)
	require.NoError(t, err)
	logs, stop := startRun(t, cfg)
	t.Cleanup(func() {
		stop() // the sockets are removed when run returns
		for _, p := range []string{stream, dgram} {
			_, err := os.Lstat(p)
			require.True(t, os.IsNotExist(err), "%s left behind", p)
		}
	})
	logs.wait(t, "control API")
	for _, p := range []string{stream, dgram} {
		require.Eventually(t, func() bool { _, err := os.Stat(p); return err == nil }, 5*time.Second, time.Millisecond)
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o660), fi.Mode().Perm(), "--socket-mode applies to %s", p)
	}

	sc, err := net.Dial("unix", stream)
	require.NoError(t, err)
	local := filepath.Join(dir, "vf.sock")
	dc, err := net.DialUnix("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"}, &net.UnixAddr{Name: dgram, Net: "unixgram"})
	require.NoError(t, err)
	_, err = dc.Write([]byte("VFKT"))
	require.NoError(t, err)
	macS, macD := header.MAC{0x52, 0x54, 0, 0x12, 0, 1}, header.MAC{0x52, 0x54, 0, 0x12, 0, 2}
	gs := &testGuest{t: t, f: &streamLink{sc}}
	gd := &testGuest{t: t, f: &dgramLink{dc}}
	gs.ip = gs.dhcp(macS, "qemu-stream", netip.Addr{})
	gd.ip = gd.dhcp(macD, "vfkit", netip.Addr{})
	require.True(t, gs.ip.IsValid() && gd.ip.IsValid() && gs.ip != gd.ip)
	_, a := gs.lookup(macS, "vfkit.arcnet.internal.")
	require.Equal(t, gd.ip.String(), a)
	_, a = gd.lookup(macD, "qemu-stream.arcnet.internal.")
	require.Equal(t, gs.ip.String(), a)

	var ps apiPorts
	code, b := call(t, ctl, "GET", "/v1/ports", "")
	require.Equal(t, 200, code, string(b))
	require.NoError(t, json.Unmarshal(b, &ps))
	require.Len(t, ps.Ports, 2)
	byRole := map[string]apiPort{}
	for _, p := range ps.Ports {
		byRole[p.Role] = p
	}
	require.Equal(t, stream, byRole["stream"].Socket)
	require.Equal(t, macS.String(), byRole["stream"].MAC)
	require.Equal(t, "qemu-stream", byRole["stream"].Hostname)
	require.Equal(t, dgram, byRole["dgram"].Socket)
	require.Equal(t, gd.ip.String(), byRole["dgram"].Address)
	require.True(t, byRole["dgram"].Active)

	// The stream guest goes: its port ends, its lease stays.
	gs.f.Disconnect()
	logs.wait(t, "guest port detached")
	require.Eventually(t, func() bool {
		_, b := call(t, ctl, "GET", "/v1/ports", "")
		require.NoError(t, json.Unmarshal(b, &ps))
		for _, p := range ps.Ports {
			if p.Role == "stream" {
				return !p.Active
			}
		}
		return false
	}, 5*time.Second, time.Millisecond)
	var ls apiLeases
	code, b = call(t, ctl, "GET", "/v1/leases", "")
	require.Equal(t, 200, code)
	require.NoError(t, json.Unmarshal(b, &ls))
	require.Len(t, ls.Leases, 2, "the lease of the guest that went stays")
	_, a = gd.lookup(macD, "qemu-stream.arcnet.internal.")
	require.Equal(t, gs.ip.String(), a)
	dc.Close()
	os.Remove(local)
}
