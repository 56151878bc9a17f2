package main

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
	"github.com/arcnet/vhost-arcnet/nat"
	"github.com/stretchr/testify/require"
)

func stateEngine(t *testing.T) *nat.Engine {
	t.Helper()
	e, err := nat.New(nat.Config{External: netip.MustParseAddr("100.64.0.2"), GuestPrefix: netip.MustParsePrefix("10.0.2.0/24")})
	require.NoError(t, err)
	return e
}

// openFlow sends a guest's TCP SYN from port through e.
func openFlow(t *testing.T, e *nat.Engine, port uint16) {
	t.Helper()
	b := headertest.Frame{IPv4: &headertest.IPv4Header{Protocol: 6, Src: netip.MustParseAddr("10.0.2.15"),
		Dst: netip.MustParseAddr("192.0.2.1")}, TCP: &headertest.TCPHeader{SrcPort: port, DstPort: 80, Flags: 0x02}}.Packet()
	ps := []nat.Packet{{Buf: b}}
	e.Translate(nat.Guest, ps)
	require.Equal(t, nat.ToUplink, ps[0].Verdict, "%v", ps[0].Reason)
}

func TestFlowStateFile(t *testing.T) {
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	path := filepath.Join(t.TempDir(), "vm.sock.natflows")

	// No file: an empty table.
	e1 := stateEngine(t)
	s1 := restoreFlows(path, e1, log)
	require.Contains(t, logBuf.String(), "no state file")
	s1.save(false)
	_, err := os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist, "nothing changed, nothing written")
	openFlow(t, e1, 40000)
	openFlow(t, e1, 40001)
	s1.save(false)
	st1, err := os.Stat(path)
	require.NoError(t, err)
	require.EqualValues(t, 32+2*nat.SnapshotBytesPerFlow+4, st1.Size())
	require.NoError(t, os.Remove(path))
	s1.save(false)
	_, err = os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist, "unchanged since the last write")
	s1.save(true)
	_, err = os.Stat(path)
	require.NoError(t, err, "forced at exit")

	// A killed writer's temporary file is removed; the flows come back.
	stale := filepath.Join(filepath.Dir(path), ".vm.sock.natflows.tmp-123")
	require.NoError(t, os.WriteFile(stale, []byte("half"), 0o600))
	logBuf.Reset()
	e2 := stateEngine(t)
	restoreFlows(path, e2, log)
	require.Equal(t, 2, e2.Len())
	require.Contains(t, logBuf.String(), "nat flows restored")
	require.Contains(t, logBuf.String(), "flows=2")
	_, err = os.Stat(stale)
	require.ErrorIs(t, err, os.ErrNotExist)

	// A damaged file: one warning, an empty table, no failure.
	for _, c := range []struct {
		name string
		data []byte
	}{{"garbage", []byte("not a snapshot")}, {"empty", nil}} {
		require.NoError(t, os.WriteFile(path, c.data, 0o600))
		logBuf.Reset()
		e3 := stateEngine(t)
		restoreFlows(path, e3, log)
		require.Zero(t, e3.Len(), c.name)
		require.Equal(t, 1, strings.Count(logBuf.String(), "\n"), "%s: %s", c.name, logBuf.String())
		require.Contains(t, logBuf.String(), "level=WARN msg=\"nat flows not restored: starting with none\"")
	}

	// A state file that cannot be written: logged once, not fatal.
	logBuf.Reset()
	bad := restoreFlows(filepath.Join(t.TempDir(), "no", "dir", "flows"), stateEngine(t), log)
	bad.save(true)
	bad.save(true)
	require.Equal(t, 1, strings.Count(logBuf.String(), "writing the state file failed"), logBuf.String())
}

// BenchmarkFlowSave is one write of the state file at 100k flows: the
// snapshot (under the engine's lock), the write, fsync and rename.
func BenchmarkFlowSave(b *testing.B) {
	const flows = 100_000
	e, err := nat.New(nat.Config{External: netip.MustParseAddr("100.64.0.2"), GuestPrefix: netip.MustParsePrefix("10.0.0.0/16"),
		MaxFlows: 1 << 17, MaxFlowsPerGuest: 1 << 17})
	require.NoError(b, err)
	ps := make([]nat.Packet, 1)
	for j := range flows {
		src := netip.AddrFrom4([4]byte{10, 0, byte(j >> 16), byte(j >> 8)})
		dst := netip.AddrFrom4([4]byte{198, 18, byte(j >> 16), byte(j >> 8)})
		ps[0] = nat.Packet{Buf: headertest.Frame{IPv4: &headertest.IPv4Header{Protocol: 6, Src: src, Dst: dst}, TCP: &headertest.TCPHeader{SrcPort: 1024 + uint16(j&255), DstPort: 80, Flags: 0x02}}.Packet()}
		e.Translate(nat.Guest, ps)
		require.Equal(b, nat.ToUplink, ps[0].Verdict, "%v", ps[0].Reason)
	}
	s := &flowSaver{path: filepath.Join(b.TempDir(), "flows"), eng: e, log: slog.New(slog.DiscardHandler)}
	for b.Loop() {
		s.save(true)
	}
	st, err := os.Stat(s.path)
	require.NoError(b, err)
	b.ReportMetric(float64(st.Size())/flows, "B/flow")
}
