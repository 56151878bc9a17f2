package main

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/hostif"
)

// A reload sets the log level from the file; without a config file there
// is nothing to reload.
func TestReloadLogLevel(t *testing.T) {
	defer logLevel.Set(logLevel.Level())
	p := writeConfig(t, "socket = \"/tmp/x.sock\"\nlog-level = \"info\"\n")
	cfg, err := parseFlags([]string{"--config", p}, io.Discard)
	require.NoError(t, err)
	logLevel.Set(cfg.logLevel)
	r := &reloader{started: cfg.flags, applied: cfg, log: slog.New(slog.DiscardHandler)}
	require.NoError(t, os.WriteFile(p, []byte("socket = \"/tmp/x.sock\"\nlog-level = \"debug\"\n"), 0o600))
	require.True(t, r.reload())
	require.Equal(t, slog.LevelDebug, logLevel.Level())
	require.Equal(t, slog.LevelDebug, r.applied.logLevel)

	cfg, err = parseFlags([]string{"--socket", "/tmp/x.sock"}, io.Discard)
	require.NoError(t, err)
	r = &reloader{started: cfg.flags, applied: cfg, log: slog.New(slog.DiscardHandler)}
	require.False(t, r.reload(), "no --config: nothing to reload")
}

// The forwards' part of a reload, against the NAT engine (no TAP): a
// forward in the file is added with origin config; one the control API
// added with the same spec is adopted rather than refused; forwards that
// leave the file are removed; one whose host port is taken is left out
// (and so tried again at the next reload).
func TestReloadForwards(t *testing.T) {
	_, n := controlState(t, netip.MustParseAddr("127.0.0.2"))
	r := &reloader{net: n, log: n.log}
	spec := func(port uint16, guest string) hostif.ForwardSpec {
		s, err := hostif.ParseForward("tcp:127.0.0.1:" + strconv.Itoa(int(port)) + ":" + guest + ":80")
		require.NoError(t, err)
		return s
	}
	origins := func() map[string]string {
		out := map[string]string{}
		for _, f := range n.forwarders() {
			d := n.describeForward(f)
			out[d.Spec] = d.Origin
		}
		return out
	}
	a, b := spec(freePort(t), "192.168.127.2"), spec(freePort(t), "web")
	var st reloadStats
	got := r.forwards(nil, []hostif.ForwardSpec{a}, &st)
	require.Equal(t, []hostif.ForwardSpec{a}, got)
	require.Equal(t, map[string]string{a.String(): "config"}, origins())

	_, err := n.addForward(b, byAPI)
	require.NoError(t, err)
	require.Equal(t, "api", origins()[b.String()])
	st = reloadStats{}
	got = r.forwards([]hostif.ForwardSpec{a}, []hostif.ForwardSpec{b}, &st)
	require.Equal(t, []hostif.ForwardSpec{b}, got)
	require.Equal(t, map[string]string{b.String(): "config"}, origins(), "a removed, b adopted")
	require.Equal(t, reloadStats{fwdRemoved: 1}, st)

	// A host port in use: logged, counted, left out.
	busy := spec(freePort(t), "web")
	hold, err := hostif.NewForwarder(busy, hostif.ForwarderOptions{Target: netip.MustParseAddrPort("127.0.0.2:1")})
	require.NoError(t, err)
	defer hold.Close()
	st = reloadStats{}
	got = r.forwards([]hostif.ForwardSpec{b}, []hostif.ForwardSpec{busy}, &st)
	require.Empty(t, got)
	require.Equal(t, reloadStats{fwdRemoved: 1, failed: 1}, st)
	require.Empty(t, origins())
}
