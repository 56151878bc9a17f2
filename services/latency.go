package services

import (
	"sync/atomic"
	"time"
)

// latencyBounds are the upper bounds (inclusive) of the latency
// histogram's buckets; a last bucket takes what is above the last bound.
var latencyBounds = [...]time.Duration{
	500 * time.Microsecond,
	1 * time.Millisecond,
	2 * time.Millisecond,
	5 * time.Millisecond,
	10 * time.Millisecond,
	25 * time.Millisecond,
	50 * time.Millisecond,
	100 * time.Millisecond,
	250 * time.Millisecond,
	500 * time.Millisecond,
	1000 * time.Millisecond,
	2500 * time.Millisecond,
}

// NumLatencyBounds is the number of finite bucket bounds of a
// LatencySnapshot; it has one more bucket, for what is above the last.
const NumLatencyBounds = len(latencyBounds)

// latencyHistogram counts durations in fixed buckets: atomic counters, no
// lock, no allocation. The zero value is ready to use.
type latencyHistogram struct {
	buckets   [NumLatencyBounds + 1]atomic.Uint64
	sumMicros atomic.Uint64
}

// observe counts d (negative durations count as 0).
func (h *latencyHistogram) observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < NumLatencyBounds && d > latencyBounds[i] {
		i++
	}
	h.sumMicros.Add(uint64(d.Microseconds()))
	h.buckets[i].Add(1)
}

// snapshot reads the counters. Each is read atomically, not all together:
// an observation made during the read can be in Sum and not in the
// buckets or the reverse. Count is the buckets' total.
func (h *latencyHistogram) snapshot() LatencySnapshot {
	s := LatencySnapshot{Bounds: latencyBounds}
	for i := range h.buckets {
		s.Buckets[i] = h.buckets[i].Load()
		s.Count += s.Buckets[i]
	}
	s.Sum = time.Duration(h.sumMicros.Load()) * time.Microsecond
	return s
}

// LatencySnapshot is a copy of a latency histogram.
type LatencySnapshot struct {
	// Bounds are the buckets' upper bounds, inclusive, in increasing
	// order (0.5 ms to 2.5 s).
	Bounds [NumLatencyBounds]time.Duration
	// Buckets are the observation counts of each bucket, not cumulative:
	// Buckets[i] counts the durations in (Bounds[i-1], Bounds[i]], and
	// Buckets[NumLatencyBounds] those above the last bound.
	Buckets [NumLatencyBounds + 1]uint64
	// Count is the number of observations (the sum of Buckets).
	Count uint64
	// Sum is the observations' total, to the microsecond (each is
	// truncated to a whole microsecond).
	Sum time.Duration
}

// Cumulative returns the number of observations at most Bounds[i]
// (i < NumLatencyBounds), or Count for i == NumLatencyBounds.
func (s LatencySnapshot) Cumulative(i int) uint64 {
	var n uint64
	for j := 0; j <= i && j < len(s.Buckets); j++ {
		n += s.Buckets[j]
	}
	return n
}

// UpstreamLatency returns the histogram of the upstream DNS exchanges'
// latencies: each exchange with an upstream resolver that got an answer
// (whatever its rcode), over UDP and over TCP (a truncated UDP answer
// asked again over TCP is two exchanges), from the query's send to the
// answer's arrival (a TCP connection's setup is not counted). Exchanges
// that failed (timeout, connection refused) are not in it.
func (g *Gateway) UpstreamLatency() LatencySnapshot {
	return g.stats.upstreamLatency.snapshot()
}
