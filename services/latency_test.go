package services

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// boundIndex is the index of bound d in latencyBounds.
func boundIndex(t *testing.T, d time.Duration) int {
	t.Helper()
	for i, b := range latencyBounds {
		if b == d {
			return i
		}
	}
	t.Fatalf("no bucket bound %v", d)
	return -1
}

func TestLatencyHistogramBuckets(t *testing.T) {
	var h latencyHistogram
	for _, c := range []struct {
		d      time.Duration
		bucket int
	}{
		{-time.Millisecond, 0},
		{0, 0},
		{500 * time.Microsecond, 0}, // bounds are inclusive (Prometheus' le)
		{501 * time.Microsecond, 1},
		{time.Millisecond, 1},
		{30 * time.Millisecond, boundIndex(t, 50*time.Millisecond)},
		{2500 * time.Millisecond, NumLatencyBounds - 1},
		{2500*time.Millisecond + 1, NumLatencyBounds},
		{time.Hour, NumLatencyBounds},
	} {
		before := h.snapshot()
		h.observe(c.d)
		after := h.snapshot()
		for i := range after.Buckets {
			want := before.Buckets[i]
			if i == c.bucket {
				want++
			}
			require.Equal(t, want, after.Buckets[i], "%v: bucket %d", c.d, i)
		}
		require.Equal(t, before.Count+1, after.Count)
		require.Equal(t, before.Sum+max(c.d, 0).Truncate(time.Microsecond), after.Sum, "%v", c.d)
	}
	s := h.snapshot()
	require.Equal(t, uint64(9), s.Count)
	require.Equal(t, uint64(3), s.Cumulative(0))
	require.Equal(t, uint64(5), s.Cumulative(1))
	require.Equal(t, uint64(7), s.Cumulative(NumLatencyBounds-1))
	require.Equal(t, s.Count, s.Cumulative(NumLatencyBounds))
	require.Equal(t, 500*time.Microsecond, s.Bounds[0])
	require.Equal(t, 2500*time.Millisecond, s.Bounds[NumLatencyBounds-1])

	require.Zero(t, testing.AllocsPerRun(100, func() { h.observe(3 * time.Millisecond) }))
}

// An exchange with an upstream that answers after 60 ms lands in the
// (50 ms, 100 ms] bucket, or a later one on a slow machine, never an
// earlier one.
func TestUpstreamLatency(t *testing.T) {
	const delay = 60 * time.Millisecond
	up := startUpstream(t, func(r *dns.Msg, tcp bool) *dns.Msg {
		time.Sleep(delay)
		return aAnswer(r, "203.0.113.7", 300)
	})
	// A closed port first: that exchange fails at once and is not counted.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := pc.LocalAddr().String()
	pc.Close()
	g, _ := newTestGateway(t, func(c *Config) { c.DNSUpstreams = []string{closed, up.addr} })
	require.Zero(t, g.UpstreamLatency().Count)

	r := ask(t, g, question("slow.example.", dns.TypeA), true)
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Equal(t, uint64(2), g.Stats().Get(DNSForwarded))
	require.Equal(t, uint64(1), g.Stats().Get(DNSUpstreamErrs))

	s := g.UpstreamLatency()
	require.Equal(t, uint64(1), s.Count)
	i50 := boundIndex(t, 50*time.Millisecond)
	require.Zero(t, s.Cumulative(i50), "below the upstream's delay: %v", s.Buckets)
	require.GreaterOrEqual(t, s.Sum, delay)
	if s.Buckets[i50+1] != 1 {
		// Only a loaded machine takes 40 ms more than the delay.
		require.Equal(t, uint64(1), s.Cumulative(boundIndex(t, 1000*time.Millisecond)), "%v", s.Buckets)
		t.Logf("exchange took %v (buckets %v)", s.Sum, s.Buckets)
	}

	// Answered from the cache: no exchange.
	ask(t, g, question("slow.example.", dns.TypeA), true)
	require.Equal(t, uint64(1), g.UpstreamLatency().Count)
}

// A truncated UDP answer asked again over TCP is two exchanges: the UDP
// one (immediate) and the TCP one (after the delay).
func TestUpstreamLatencyTCPRetry(t *testing.T) {
	const delay = 30 * time.Millisecond
	up := startUpstream(t, func(r *dns.Msg, tcp bool) *dns.Msg {
		if !tcp {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Truncated = true
			return m
		}
		time.Sleep(delay)
		return aAnswer(r, "203.0.113.9", 60)
	})
	g, _ := newTestGateway(t, func(c *Config) { c.DNSUpstreams = []string{up.addr} })
	ask(t, g, question("big.example.", dns.TypeA), true)
	require.Equal(t, uint64(1), g.Stats().Get(DNSTCPRetries))

	s := g.UpstreamLatency()
	require.Equal(t, uint64(2), s.Count)
	i25 := boundIndex(t, 25*time.Millisecond)
	// The TCP exchange is not under the delay (the UDP one is, unless the
	// machine is very loaded).
	require.LessOrEqual(t, s.Cumulative(i25), uint64(1), "%v", s.Buckets)
	require.GreaterOrEqual(t, s.Sum, delay)
}
