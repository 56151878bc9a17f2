package datapath

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// recorder is a Port that keeps copies of the frames sent to it.
type recorder struct {
	stats  Stats
	frames [][]byte
	queues []uint16
}

func (r *recorder) Name() string  { return "recorder" }
func (r *recorder) Stats() *Stats { return &r.stats }
func (r *recorder) Send(frames []Frame) {
	for _, f := range frames {
		b := make([]byte, f.Len)
		copyFrame(b, f.Segs)
		r.frames = append(r.frames, b)
		r.queues = append(r.queues, f.Queue)
	}
}

func frameOf(segs ...[]byte) Frame {
	n := 0
	for _, s := range segs {
		n += len(s)
	}
	return Frame{Segs: segs, Len: n}
}

func TestLoopbackSwapsMACsWithoutWritingTheSource(t *testing.T) {
	eth := []byte{1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x00}
	payload := bytes.Repeat([]byte{0xab}, 50)
	tests := []struct {
		name string
		segs [][]byte
	}{
		{"one segment", [][]byte{append(append([]byte{}, eth...), payload...)}},
		{"header split inside the MACs", [][]byte{eth[:5], eth[5:9], append(append([]byte{}, eth[9:]...), payload...)}},
		{"MACs end a segment", [][]byte{eth[:12], append(append([]byte{}, eth[12:]...), payload...)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var orig [][]byte
			for _, s := range tc.segs {
				orig = append(orig, append([]byte{}, s...))
			}
			rec := &recorder{}
			l := NewLoopback("lo", rec)
			f := frameOf(tc.segs...)
			f.Queue = 3
			l.Send([]Frame{f})
			require.Len(t, rec.frames, 1)
			want := append([]byte{2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 0x08, 0x00}, payload...)
			require.Equal(t, want, rec.frames[0])
			require.Equal(t, uint16(3), rec.queues[0])
			require.Equal(t, orig, tc.segs, "loopback wrote into the transmit buffers")
			require.EqualValues(t, 1, l.Stats().TxPackets.Load())
		})
	}
}

func TestLoopbackDropsRunts(t *testing.T) {
	rec := &recorder{}
	l := NewLoopback("lo", rec)
	l.Send([]Frame{frameOf([]byte{1, 2, 3})})
	require.Empty(t, rec.frames)
	require.EqualValues(t, 1, l.Stats().Drops(DropMalformed))
}

func TestSinkCounts(t *testing.T) {
	s := NewSink("sink")
	s.Send([]Frame{frameOf(make([]byte, 60)), frameOf(make([]byte, 100), make([]byte, 40))})
	require.EqualValues(t, 2, s.Stats().TxPackets.Load())
	require.EqualValues(t, 200, s.Stats().TxBytes.Load())
	require.EqualValues(t, 2, s.Stats().Drops(DropSink))
}

func TestCopySinkCopiesEveryFrame(t *testing.T) {
	big := bytes.Repeat([]byte{0xcd}, 9000)
	tests := []struct {
		name  string
		queue uint16
		segs  [][]byte
	}{
		{"one segment", 0, [][]byte{bytes.Repeat([]byte{1}, 60)}},
		{"scattered", 1, [][]byte{{1, 2, 3}, bytes.Repeat([]byte{4}, 100), {5}}},
		{"larger than a buffer", 2, [][]byte{big[:14], big[14:]}},
		{"queue pair past the last", MaxQueuePairs + 3, [][]byte{bytes.Repeat([]byte{7}, 1514)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewCopySink("sink")
			f := frameOf(tc.segs...)
			f.Queue = tc.queue
			frames := []Frame{frameOf(make([]byte, 64)), f}
			frames[0].Queue = tc.queue
			s.Send(frames)
			want := bytes.Join(tc.segs, nil)
			got := s.bufs[int(tc.queue)%MaxQueuePairs][1]
			require.Equal(t, want, got[:len(want)], "the frame's bytes in the sink's buffer")
			require.GreaterOrEqual(t, len(got), copyBufSize)
			require.EqualValues(t, 2, s.Stats().TxPackets.Load())
			require.EqualValues(t, 64+len(want), s.Stats().TxBytes.Load())
			require.EqualValues(t, 2, s.Stats().Drops(DropSink))
			for q := range s.bufs {
				if q != int(tc.queue)%MaxQueuePairs {
					require.Nil(t, s.bufs[q][0], "queue pair %d's buffers untouched", q)
				}
			}
		})
	}
	require.Nil(t, NewSink("sink").bufs, "a plain sink copies nothing")
}

// More frames in one call than a batch: slots are reused, every frame is
// still copied and counted.
func TestCopySinkLongCall(t *testing.T) {
	s := NewCopySink("sink")
	frames := make([]Frame, MaxBatch+5)
	for i := range frames {
		frames[i] = frameOf(bytes.Repeat([]byte{byte(i)}, 60))
	}
	s.Send(frames)
	require.EqualValues(t, MaxBatch+5, s.Stats().TxPackets.Load())
	require.Equal(t, byte(MaxBatch), s.bufs[0][0][0], "slot 0 last held frame MaxBatch")
	require.Equal(t, byte(5), s.bufs[0][5][0])
}

func TestSinkAllocs(t *testing.T) {
	buf := make([]byte, 9000)
	frames := make([]Frame, MaxBatch)
	for i := range frames {
		frames[i] = frameOf(buf[:20], buf[20:1514])
	}
	frames[3] = frameOf(buf[:14], buf[14:]) // a jumbo frame grows its slot once
	for _, s := range []*Sink{NewSink("sink"), NewCopySink("sink")} {
		s.Send(frames)
		require.Zero(t, testing.AllocsPerRun(100, func() { s.Send(frames) }))
	}
}

func BenchmarkCopySink(b *testing.B) {
	for _, size := range []int{64, 1518} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			buf := make([]byte, size)
			frames := make([]Frame, 32)
			for i := range frames {
				frames[i] = frameOf(buf[:12], buf[12:])
			}
			s := NewCopySink("sink")
			b.SetBytes(int64(size * len(frames)))
			b.ReportAllocs()
			for b.Loop() {
				s.Send(frames)
			}
		})
	}
}

func TestSourceFrames(t *testing.T) {
	s := NewSource(1518)
	var frames [8]Frame
	require.Equal(t, 8, s.Fill(1, frames[:]))
	for _, f := range frames {
		require.Equal(t, 1518, f.Len)
		require.Equal(t, uint16(1), f.Queue)
		require.Equal(t, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, f.Segs[0][:6])
	}
	require.Len(t, NewSource(10).frame, 60, "frames are padded to the Ethernet minimum")
}

func TestLoopbackAllocs(t *testing.T) {
	rec := &nullPort{}
	l := NewLoopback("lo", rec)
	buf := make([]byte, 1514)
	frames := make([]Frame, 32)
	for i := range frames {
		frames[i] = frameOf(buf[:20], buf[20:])
	}
	l.Send(frames)
	require.Zero(t, testing.AllocsPerRun(100, func() { l.Send(frames) }))
}

type nullPort struct{ stats Stats }

func (n *nullPort) Name() string  { return "null" }
func (n *nullPort) Stats() *Stats { return &n.stats }
func (n *nullPort) Send([]Frame)  {}
