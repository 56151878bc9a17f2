package qemu

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// readNewc parses a newc archive (the inverse of writeCPIO) for the tests.
func readNewc(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+6+8*i+8]), 16, 32)
		require.NoError(t, err)
		return uint32(v)
	}
	for {
		require.GreaterOrEqual(t, len(b)-off, 110, "truncated header at %d", off)
		require.Equal(t, "070701", string(b[off:off+6]))
		mode, size, rmaj, rmin, namesize := field(1), field(6), field(9), field(10), field(11)
		name := string(b[off+110 : off+110+int(namesize)-1])
		require.Equal(t, byte(0), b[off+110+int(namesize)-1])
		off += 110 + int(namesize)
		align()
		data := b[off : off+int(size)]
		off += int(size)
		align()
		if name == "TRAILER!!!" {
			require.Equal(t, len(b), off, "bytes after the trailer")
			return out
		}
		e := cpioEntry{Name: name, Mode: mode, DevMaj: rmaj, DevMin: rmin}
		if size > 0 {
			e.Data = append([]byte(nil), data...)
		}
		out = append(out, e)
	}
}

func TestWriteInitramfs(t *testing.T) {
	entries := []cpioEntry{
		cpioDir("bin"),
		cpioFile("bin/busybox", 0o755, []byte("\x7fELF...")),
		cpioSymlink("bin/sh", "busybox"),
		cpioCharDev("dev/console", 0o600, 5, 1),
		cpioFile("init", 0o755, []byte("#!/bin/sh\necho hi\n")),
		cpioFile("empty", 0o644, nil),
	}
	var gz bytes.Buffer
	require.NoError(t, writeInitramfs(&gz, entries))
	zr, err := gzip.NewReader(&gz)
	require.NoError(t, err)
	raw, err := io.ReadAll(zr)
	require.NoError(t, err)
	require.Equal(t, entries, readNewc(t, raw))

	var again bytes.Buffer
	require.NoError(t, writeCPIO(&again, entries))
	require.Equal(t, raw, again.Bytes(), "output depends on the entries only")
}

func TestWriteCPIORejectsBadNames(t *testing.T) {
	for _, name := range []string{"", "a/../b", "a//b", "x\x00y", "dir/"} {
		require.Error(t, writeCPIO(io.Discard, []cpioEntry{cpioFile(name, 0o644, nil)}), "name %q", name)
	}
}

// fakeBzImage builds the parts of a bzImage that kernelPayload reads.
func fakeBzImage(payload []byte, setupSects byte) []byte {
	setup := (int(setupSects) + 1) * 512
	if setupSects == 0 {
		setup = 5 * 512 // boot.rst: 0 means 4
	}
	b := make([]byte, setup+100+len(payload)+50)
	b[0x1f1] = setupSects
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(b[0x248:], 100)
	binary.LittleEndian.PutUint32(b[0x24c:], uint32(len(payload)))
	copy(b[setup+100:], payload)
	return b
}

func TestKernelPayload(t *testing.T) {
	lz4 := append(append([]byte{}, magicLZ4Legacy...), 1, 2, 3, 4, 0xaa, 0xbb, 0xcc, 0xdd)
	xz := append(append([]byte{}, magicXZ...), 9, 9, 9, 9)
	tests := []struct {
		name string
		bz   []byte
		want []byte
		kind compression
	}{
		{"lz4 from header, size trailer cut", fakeBzImage(lz4, 27), lz4[:len(lz4)-4], compressionLZ4},
		{"xz from header", fakeBzImage(xz, 0), xz, compressionXZ},
		{"scan when the header is absent", append(make([]byte, 700), xz...), xz, compressionXZ},
		{"scan lz4 to the end", append(make([]byte, 10), lz4...), lz4, compressionLZ4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, kind, err := kernelPayload(tt.bz)
			require.NoError(t, err)
			require.Equal(t, tt.kind, kind)
			require.Equal(t, tt.want, p)
		})
	}
	_, _, err := kernelPayload(make([]byte, 4096))
	require.ErrorIs(t, err, errNoPayload)
	// A header whose payload lies outside the file falls back to the scan.
	bad := fakeBzImage(lz4, 27)
	binary.LittleEndian.PutUint32(bad[0x24c:], 1<<30)
	p, kind, err := kernelPayload(bad)
	require.NoError(t, err)
	require.Equal(t, compressionLZ4, kind)
	require.True(t, bytes.HasPrefix(p, lz4))
}

func TestHasNote(t *testing.T) {
	note := func(name string, typ uint32, desc []byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, uint32(len(name)+1))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(desc)))
		b = binary.LittleEndian.AppendUint32(b, typ)
		n := append([]byte(name), 0)
		for len(n)%4 != 0 {
			n = append(n, 0)
		}
		b = append(b, n...)
		for len(desc)%4 != 0 {
			desc = append(desc, 0)
		}
		return append(b, desc...)
	}
	area := append(note("Xen", 6, []byte("linux\x00")), note("Xen", pvhEntryNote, []byte{1, 2, 3, 4, 0, 0, 0, 0})...)
	require.True(t, hasNote(area, binary.LittleEndian, "Xen", pvhEntryNote))
	require.False(t, hasNote(area, binary.LittleEndian, "Xen", 99))
	require.False(t, hasNote(area, binary.LittleEndian, "GNU", pvhEntryNote))
	require.False(t, hasNote(area[:len(area)-4], binary.LittleEndian, "Xen", pvhEntryNote), "truncated desc")
}

func TestModuleOrder(t *testing.T) {
	deps := map[string][]string{
		"net_failover": {"failover"},
		"virtio":       {"virtio_ring"},
		"virtio_pci":   {"virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"},
		"virtio_net":   {"virtio_ring", "virtio", "net_failover"},
	}
	want := []string{"failover", "net_failover", "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_net"}
	got, err := moduleOrder(want, deps)
	require.NoError(t, err)
	require.Equal(t, want, got, "an order that already works is kept")

	got, err = moduleOrder([]string{"virtio_net", "virtio_pci", "virtio", "virtio_ring", "net_failover", "failover", "virtio_pci_modern_dev", "virtio_pci_legacy_dev"}, deps)
	require.NoError(t, err)
	pos := map[string]int{}
	for i, m := range got {
		pos[m] = i
	}
	for m, ds := range deps {
		for _, d := range ds {
			require.Less(t, pos[d], pos[m], "%s before %s", d, m)
		}
	}

	_, err = moduleOrder([]string{"virtio_net"}, deps)
	require.ErrorContains(t, err, "not in the module list")
	_, err = moduleOrder([]string{"a", "b"}, map[string][]string{"a": {"b"}, "b": {"a"}})
	require.ErrorContains(t, err, "cycle")
}

func TestParseRecord(t *testing.T) {
	tests := []struct {
		line string
		ok   bool
		tag  string
		args []string
		kv   map[string]string
	}{
		{"GUEST-RESULT PASS", true, "RESULT", []string{"PASS"}, nil},
		{"GUEST-RESULT FAIL ping 10.0.2.2", true, "RESULT", []string{"FAIL", "ping", "10.0.2.2"}, nil},
		{"[    2.1] virtio_net virtio0: GUEST-STATS rx_packets=3 tx_packets=4 ", true, "STATS", nil,
			map[string]string{"rx_packets": "3", "tx_packets": "4"}},
		{"GUEST-IP ip=10.0.2.15 gw= dns=1.1.1.1,8.8.8.8", true, "IP", nil,
			map[string]string{"ip": "10.0.2.15", "gw": "", "dns": "1.1.1.1,8.8.8.8"}},
		{"GUEST-WAIT go", true, "WAIT", []string{"go"}, nil},
		{"GUEST-DNS name=a Bad=x =y", true, "DNS", []string{"Bad=x", "=y"}, map[string]string{"name": "a"}},
		{"udhcpc: sending discover", false, "", nil, nil},
		{"GUEST-", false, "", nil, nil},
		{"GUEST-lower x", false, "", nil, nil},
	}
	for _, tt := range tests {
		r, ok := ParseRecord(tt.line)
		require.Equal(t, tt.ok, ok, tt.line)
		require.Equal(t, tt.tag, r.Tag, tt.line)
		require.Equal(t, tt.args, r.Args, tt.line)
		require.Equal(t, tt.kv, r.KV, tt.line)
	}
	r, _ := ParseRecord("GUEST-STATS rx_packets=12 tx_packets=x")
	n, err := r.Uint("rx_packets")
	require.NoError(t, err)
	require.EqualValues(t, 12, n)
	_, err = r.Uint("tx_packets")
	require.Error(t, err)
	_, err = r.Uint("absent")
	require.Error(t, err)
	require.Equal(t, "GUEST-STATS rx_packets=12 tx_packets=x", r.String())
}

func TestConsoleResult(t *testing.T) {
	c := &Console{}
	for _, l := range []string{"GUEST-STATS rx_packets=1", "GUEST-STATS rx_packets=5", "GUEST-RESULT PASS"} {
		r, ok := ParseRecord(l)
		require.True(t, ok)
		c.Records = append(c.Records, r)
	}
	require.True(t, c.Passed())
	n, err := c.Stats("rx_packets")
	require.NoError(t, err)
	require.EqualValues(t, 5, n, "the last GUEST-STATS counts")
	require.Len(t, c.All("STATS"), 2)
	c.TimedOut = true
	require.False(t, c.Passed())
	require.Contains(t, (&Console{TimedOut: true}).Result(), "timed out")
}

// FuzzParseRecord: console lines come from a guest; parsing never panics,
// and a record prints back to a line that parses to the same record.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{"GUEST-RESULT PASS", "x GUEST-STATS rx_packets=1 a=b=c", "GUEST-", "GUEST-A =", "GUEST-B k=\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r, ok := ParseRecord(line)
		if !ok {
			return
		}
		r2, ok := ParseRecord(r.String())
		if !ok || r2.Tag != r.Tag || len(r2.KV) != len(r.KV) || len(r2.Args) != len(r.Args) {
			t.Fatalf("%q -> %q -> %+v", line, r.String(), r2)
		}
		for k, v := range r.KV {
			if r2.KV[k] != v {
				t.Fatalf("%q: key %s: %q != %q", line, k, r2.KV[k], v)
			}
		}
	})
}
