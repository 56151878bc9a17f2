package headertest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// Record is one frame a Recorder kept.
type Record struct {
	Data  []byte // a copy of the whole frame
	Hdr   virtio.NetHdr
	Queue uint16
	Segs  int    // how many segments it came in
	Head  *byte  // &segs[0][0] as handed over (nil when empty): what the frame aliased
	Tail  []byte // the last segment as handed over, not a copy
}

// Recorder keeps what a test port is handed: a copy of every frame with its
// virtio-net header, queue and the shape it came in, and how many Send
// calls brought them. datapathtest.Capture is the datapath.Port around it;
// the datapath package's own tests, which cannot import datapathtest (it
// imports datapath), wrap it themselves.
type Recorder struct {
	// CountOnly makes the port count frames without keeping them
	// (benchmarks, allocation tests). Set it before the port is used.
	CountOnly bool

	calls atomic.Int64
	n     atomic.Int64

	mu    sync.Mutex
	recs  []Record
	read  int           // Wait's position in recs
	added chan struct{} // wakes Wait
}

// Call counts one Send call of n frames and reports whether the port
// should Add them (false with CountOnly). A port calls it once per Send.
func (r *Recorder) Call(n int) bool {
	r.calls.Add(1)
	if r.CountOnly {
		r.n.Add(int64(n))
		return false
	}
	return true
}

// Add keeps a copy of one frame of length bytes in segs, sent with hdr on
// queue. It panics if the segments do not add up to length.
func (r *Recorder) Add(segs [][]byte, length int, hdr virtio.NetHdr, queue uint16) {
	rec := Record{Data: make([]byte, 0, length), Hdr: hdr, Queue: queue, Segs: len(segs)}
	for _, s := range segs {
		rec.Data = append(rec.Data, s...)
	}
	if len(rec.Data) != length {
		panic("frame length does not match its segments")
	}
	if len(segs) > 0 {
		rec.Tail = segs[len(segs)-1]
		if len(segs[0]) > 0 {
			rec.Head = &segs[0][0]
		}
	}
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.n.Add(1) // after the append: a test that sees Count reach n finds n frames
	if r.added == nil {
		r.added = make(chan struct{}, 1)
	}
	added := r.added
	r.mu.Unlock()
	select {
	case added <- struct{}{}:
	default:
	}
}

// Calls returns how many Send calls were counted.
func (r *Recorder) Calls() int { return int(r.calls.Load()) }

// Count returns how many frames were kept (or, with CountOnly, counted)
// since the last Reset.
func (r *Recorder) Count() int { return int(r.n.Load()) }

// Records returns the frames kept so far.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Record(nil), r.recs...)
}

// Frames returns the bytes of the frames kept so far.
func (r *Recorder) Frames() [][]byte { return framesOf(r.Records()) }

// Hdrs returns the virtio-net headers of the frames kept so far.
func (r *Recorder) Hdrs() []virtio.NetHdr {
	var h []virtio.NetHdr
	for _, rec := range r.Records() {
		h = append(h, rec.Hdr)
	}
	return h
}

// Queues returns the queues of the frames kept so far.
func (r *Recorder) Queues() []uint16 {
	var q []uint16
	for _, rec := range r.Records() {
		q = append(q, rec.Queue)
	}
	return q
}

// QueueCount returns how many of the frames kept so far came on queue q.
func (r *Recorder) QueueCount(q uint16) int {
	n := 0
	for _, rec := range r.Records() {
		if rec.Queue == q {
			n++
		}
	}
	return n
}

// Take returns the frames kept so far and forgets them (Count goes on).
func (r *Recorder) Take() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	recs := r.recs
	r.recs, r.read = nil, 0
	return recs
}

// TakeFrames returns the bytes of the frames kept so far and forgets them.
func (r *Recorder) TakeFrames() [][]byte { return framesOf(r.Take()) }

// Reset forgets every frame and call.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls.Store(0)
	r.n.Store(0)
	r.recs, r.read = nil, 0
}

// Wait returns the first frame after those an earlier Wait went past that
// match accepts, waiting for it up to d, then fails the test.
func (r *Recorder) Wait(t testing.TB, d time.Duration, match func(Record) bool) Record {
	t.Helper()
	r.mu.Lock()
	if r.added == nil {
		r.added = make(chan struct{}, 1)
	}
	added := r.added
	r.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		r.mu.Lock()
		for r.read < len(r.recs) {
			rec := r.recs[r.read]
			r.read++
			if match(rec) {
				r.mu.Unlock()
				return rec
			}
		}
		r.mu.Unlock()
		select {
		case <-added:
		case <-timer.C:
			t.Fatal("timed out waiting for a frame")
			return Record{}
		}
	}
}

func framesOf(recs []Record) [][]byte {
	var f [][]byte
	for _, rec := range recs {
		f = append(f, rec.Data)
	}
	return f
}
