package datapath

import (
	"bytes"
	"encoding/binary"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/stretchr/testify/require"
)

// pcapRecord is one record read back from a pcap file.
type pcapRecord struct {
	ts         time.Time
	orig       int
	data       []byte
	incl       int
	sec, nsecs uint32
}

// readPcap parses a pcap file as written by PcapWriter (nanosecond
// little-endian, LINKTYPE_ETHERNET) and returns its snaplen and records.
func readPcap(t testing.TB, b []byte) (int, []pcapRecord) {
	t.Helper()
	require.GreaterOrEqual(t, len(b), 24)
	require.Equal(t, uint32(0xa1b23c4d), binary.LittleEndian.Uint32(b[0:]), "magic (nanosecond)")
	require.Equal(t, uint16(2), binary.LittleEndian.Uint16(b[4:]))
	require.Equal(t, uint16(4), binary.LittleEndian.Uint16(b[6:]))
	require.Equal(t, uint32(1), binary.LittleEndian.Uint32(b[20:]), "LINKTYPE_ETHERNET")
	snap := int(binary.LittleEndian.Uint32(b[16:]))
	var out []pcapRecord
	for b = b[24:]; len(b) > 0; {
		require.GreaterOrEqual(t, len(b), 16)
		r := pcapRecord{sec: binary.LittleEndian.Uint32(b[0:]), nsecs: binary.LittleEndian.Uint32(b[4:]),
			incl: int(binary.LittleEndian.Uint32(b[8:])), orig: int(binary.LittleEndian.Uint32(b[12:]))}
		require.Less(t, r.nsecs, uint32(1e9))
		require.LessOrEqual(t, r.incl, snap)
		require.GreaterOrEqual(t, len(b), 16+r.incl)
		r.data = b[16 : 16+r.incl]
		r.ts = time.Unix(int64(r.sec), int64(r.nsecs))
		out = append(out, r)
		b = b[16+r.incl:]
	}
	return snap, out
}

type nopCloser struct {
	io.Writer
	closed int
}

func (n *nopCloser) Close() error { n.closed++; return nil }

func TestPcapWriter(t *testing.T) {
	var buf bytes.Buffer
	nc := &nopCloser{Writer: &buf}
	p, err := NewPcapWriter(nc, 100)
	require.NoError(t, err)
	p.now = func() time.Time { return time.Unix(1700000000, 123456789) }
	small := bytes.Repeat([]byte{1}, 60)
	big := bytes.Repeat([]byte{2}, 300)
	p.Capture([]Frame{
		{Segs: [][]byte{small[:14], small[14:]}, Len: 60},
		{Segs: [][]byte{big[:50], big[50:200], big[200:]}, Len: 300},
	})
	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "idempotent")
	require.Equal(t, 1, nc.closed)
	p.Capture([]Frame{{Segs: [][]byte{small}, Len: 60}}) // dropped after Close
	snap, recs := readPcap(t, buf.Bytes())
	require.Equal(t, 100, snap)
	require.Len(t, recs, 2)
	require.Equal(t, small, recs[0].data)
	require.Equal(t, 60, recs[0].orig)
	require.Equal(t, big[:100], recs[1].data, "truncated at snaplen")
	require.Equal(t, 300, recs[1].orig)
	require.Equal(t, uint32(123456789), recs[0].nsecs)
	require.Equal(t, uint64(2), p.Frames.Load())
	require.Equal(t, uint64(1), p.Truncated.Load())

	_, err = NewPcapWriter(&buf, 10)
	require.Error(t, err)
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestPcapWriterError(t *testing.T) {
	p, err := NewPcapWriter(failWriter{}, 0) // the header stays buffered
	require.NoError(t, err)
	f := bytes.Repeat([]byte{3}, 60000)
	for range 3 { // more than the 64 KiB buffer
		p.Capture([]Frame{{Segs: [][]byte{f}, Len: len(f)}})
	}
	require.ErrorIs(t, p.Err(), io.ErrClosedPipe)
	require.ErrorIs(t, p.Flush(), io.ErrClosedPipe)
}

// pcapPort records how many frames it was sent.
type pcapPort struct {
	name  string
	stats Stats
	mu    sync.Mutex
	n     int
}

func (p *pcapPort) Name() string  { return p.name }
func (p *pcapPort) Stats() *Stats { return &p.stats }
func (p *pcapPort) Send(f []Frame) {
	p.mu.Lock()
	p.n += len(f)
	p.mu.Unlock()
}

func pcapEth(dst, src header.MAC, n int) []byte {
	f := make([]byte, n)
	header.Ethernet(f).Encode(&header.EthernetFields{Dst: dst, Src: src, EtherType: 0x88b5}) // local experimental
	for i := 14; i < n; i++ {
		f[i] = byte(i)
	}
	return f
}

// TestSwitchCapture: the switch hands its capture every frame it forwards,
// as delivered (the head copy and the rest), and none it drops.
func TestSwitchCapture(t *testing.T) {
	sw, err := NewSwitch(SwitchOptions{})
	require.NoError(t, err)
	a, b := &pcapPort{name: "a"}, &pcapPort{name: "b"}
	macA, macB := header.MAC{2, 0, 0, 0, 0, 0xa}, header.MAC{2, 0, 0, 0, 0, 0xb}
	spA, err := sw.Attach(a, PortOptions{MAC: macA})
	require.NoError(t, err)
	_, err = sw.Attach(b, PortOptions{MAC: macB})
	require.NoError(t, err)
	var buf bytes.Buffer
	p, err := NewPcapWriter(&buf, 0)
	require.NoError(t, err)
	sw.SetCapture(p)
	good := pcapEth(macB, macA, 1000)
	spoofed := pcapEth(macB, header.MAC{2, 9, 9, 9, 9, 9}, 100)
	spA.Send([]Frame{{Segs: [][]byte{good[:500], good[500:]}, Len: len(good)}, {Segs: [][]byte{spoofed}, Len: len(spoofed)}})
	sw.SetCapture(nil)
	spA.Send([]Frame{{Segs: [][]byte{good}, Len: len(good)}})
	require.NoError(t, p.Flush())
	_, recs := readPcap(t, buf.Bytes())
	require.Len(t, recs, 1)
	require.Equal(t, good, recs[0].data)
	require.Equal(t, 2, b.n)
}

func TestPcapZeroAllocs(t *testing.T) {
	p, err := NewPcapWriter(io.Discard, 0)
	require.NoError(t, err)
	f := pcapEth(header.BroadcastMAC, header.MAC{2, 0, 0, 0, 0, 1}, 1500)
	frames := make([]Frame, MaxBatch)
	for i := range frames {
		frames[i] = Frame{Segs: [][]byte{f[:128], f[128:]}, Len: len(f)}
	}
	require.Zero(t, testing.AllocsPerRun(100, func() { p.Capture(frames) }))
}

// BenchmarkSwitchCapture measures a batch of 64 frames of 1500 B through
// the switch with no capture set (the cost must be nil) and with a pcap
// capture to io.Discard.
func BenchmarkSwitchCapture(b *testing.B) {
	for _, mode := range []string{"off", "pcap"} {
		b.Run(mode, func(b *testing.B) {
			sw, err := NewSwitch(SwitchOptions{})
			require.NoError(b, err)
			macA, macB := header.MAC{2, 0, 0, 0, 0, 0xa}, header.MAC{2, 0, 0, 0, 0, 0xb}
			spA, _ := sw.Attach(&pcapPort{name: "a"}, PortOptions{MAC: macA})
			_, _ = sw.Attach(&pcapPort{name: "b"}, PortOptions{MAC: macB})
			if mode == "pcap" {
				p, err := NewPcapWriter(io.Discard, 0)
				require.NoError(b, err)
				sw.SetCapture(p)
			}
			f := pcapEth(macB, macA, 1500)
			frames := make([]Frame, MaxBatch)
			for i := range frames {
				frames[i] = Frame{Segs: [][]byte{f}, Len: len(f)}
			}
			b.SetBytes(int64(len(f) * MaxBatch))
			b.ReportAllocs()
			for b.Loop() {
				spA.Send(frames)
			}
		})
	}
}
