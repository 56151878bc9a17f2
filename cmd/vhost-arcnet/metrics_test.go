package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/router"
	"github.com/arcnet/vhost-arcnet/hostif"
	"github.com/arcnet/vhost-arcnet/nat"
	"github.com/arcnet/vhost-arcnet/services"
)

// scrape is one scrape's metric families by name.
type scrape map[string]*dto.MetricFamily

func gather(t testing.TB, reg prometheus.Gatherer) scrape {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	s := scrape{}
	for _, mf := range mfs {
		s[mf.GetName()] = mf
	}
	return s
}

// value returns the value of series name{labels} (labels as name, value
// pairs); ok is false if the scrape lacks it.
func (s scrape) value(name string, labels ...string) (v float64, ok bool) {
	mf := s[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// requireValue checks series name{labels} has value want.
func (s scrape) requireValue(t testing.TB, want float64, name string, labels ...string) {
	t.Helper()
	v, ok := s.value(name, labels...)
	require.True(t, ok, "no series %s%v", name, labels)
	require.Equal(t, want, v, "%s%v", name, labels)
}

// Every gateway counter is exported, each as its own series.
func TestGatewayCountersAllExported(t *testing.T) {
	seen := map[string]services.Counter{}
	for c, m := range gatewayCounters {
		require.NotNil(t, m.desc, "services.Counter %v has no series", services.Counter(c))
		k := m.desc.String() + fmt.Sprint(m.labels)
		prev, dup := seen[k]
		require.False(t, dup, "%v and %v share a series", prev, services.Counter(c))
		seen[k] = services.Counter(c)
	}
}

var (
	testGuestMAC = header.MAC{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	testGuestIP  = netip.MustParseAddr("192.168.127.10")
)

// testUDPFrame builds an Ethernet/IPv4/UDP frame (UDP checksum 0: none).
func testUDPFrame(src, dst header.MAC, sip, dip netip.Addr, sport, dport uint16, payload []byte) []byte {
	n := 14 + 20 + 8 + len(payload)
	f := make([]byte, n)
	header.Ethernet(f).Encode(&header.EthernetFields{Dst: dst, Src: src, EtherType: header.EtherTypeIPv4})
	header.IPv4(f[14:]).Encode(&header.IPv4Fields{TotalLength: uint16(n - 14), TTL: 64, Protocol: header.ProtoUDP, Src: sip, Dst: dip})
	header.UDP(f[34:]).Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(n - 34)})
	copy(f[42:], payload)
	return f
}

// routedNetwork is the guest network of --uplink tap without the TAP: the
// router's uplink is a sink, the forwards listen on loopback.
func routedNetwork(t testing.TB) (*network, *datapath.Sink) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	gw, err := services.NewGateway(services.Config{Logger: log, DNSUpstreams: []string{"127.0.0.1:9"}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = gw.Close() })
	ext, host := netip.MustParseAddr("198.19.255.254"), netip.MustParseAddr("198.19.255.253")
	eng, err := nat.New(nat.Config{External: ext, GuestPrefix: gw.Subnet(), Router: gw.Addr(), MaxFlows: 1024})
	require.NoError(t, err)
	n := &network{gw: gw, hp: datapath.NewHandlerPort("gateway", gw), eng: eng}
	n.rt, err = router.New(router.Options{
		Subnet: gw.Subnet(), GatewayAddr: gw.Addr(), GatewayMAC: header.MAC(gw.MAC()), Local: n.hp, NAT: eng,
		ExternalAddr: ext, UplinkMAC: uplinkMAC(header.MAC(gw.MAC())),
		NextHop: host, NextHopMAC: header.MAC{0x02, 0, 0, 0, 0, 0x53}, Logger: log,
	})
	require.NoError(t, err)
	sink := datapath.NewSink("uplink")
	n.rt.SetUplink(sink)
	for _, s := range []string{"tcp:127.0.0.1:0:web:80", "udp:127.0.0.1:0:web:53"} {
		spec, err := hostif.ParseForward(strings.Replace(s, ":0:", ":1:", 1))
		require.NoError(t, err)
		spec.HostPort = 0 // any free port
		f, err := hostif.NewForwarder(spec, hostif.ForwarderOptions{Target: netip.AddrPortFrom(ext, 8080), Logger: log})
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close() })
		n.fwds = append(n.fwds, f)
	}
	return n, sink
}

// With the router and the NAT engine: a packet routed out shows in the
// router's, the NAT engine's and the uplink port's series.
func TestCollectorRouted(t *testing.T) {
	n, _ := routedNetwork(t)
	reg, err := newMetricsRegistry(&collector{ports: &ports{live: map[uint64]*guest{}}, net: n, natMaxFlows: 1024})
	require.NoError(t, err)

	fr := testUDPFrame(testGuestMAC, header.MAC(n.gw.MAC()), testGuestIP, netip.MustParseAddr("192.0.2.1"), 5000, 53, []byte("0123456789"))
	n.rt.SwitchPort().Send([]datapath.Frame{{Segs: [][]byte{fr}, Len: len(fr)}})

	s := gather(t, reg)
	s.requireValue(t, 1, "vhost_arcnet_router_packets_total", "direction", "out")
	s.requireValue(t, 0, "vhost_arcnet_router_packets_total", "direction", "in")
	s.requireValue(t, 1, "vhost_arcnet_router_translated_total", "direction", "out")
	s.requireValue(t, 0, "vhost_arcnet_router_drops_total", "direction", "out", "reason", "no_flow")
	s.requireValue(t, 0, "vhost_arcnet_router_drops_total", "direction", "in", "reason", "ttl")
	s.requireValue(t, 1, "vhost_arcnet_nat_flows", "proto", "udp")
	s.requireValue(t, 0, "vhost_arcnet_nat_flows", "proto", "tcp")
	s.requireValue(t, 1, "vhost_arcnet_nat_flows_created_total")
	s.requireValue(t, 1, "vhost_arcnet_nat_packets_total", "direction", "out")
	s.requireValue(t, 0, "vhost_arcnet_nat_drops_total", "reason", "table_full")
	s.requireValue(t, 0, "vhost_arcnet_nat_tcp_flows", "state", "established")
	s.requireValue(t, 1024, "vhost_arcnet_nat_flows_max")
	s.requireValue(t, 1, "vhost_arcnet_port_packets_total", "port", "router-uplink", "direction", "rx")
	s.requireValue(t, 1, "vhost_arcnet_port_attached", "port", "router-uplink")
	s.requireValue(t, 0, "vhost_arcnet_port_drops_total", "port", "router", "reason", "no_buffer")
	s.requireValue(t, 0, "vhost_arcnet_router_drops_total", "direction", "out", "reason", "router_malformed")
	s.requireValue(t, 1, "vhost_arcnet_port_packets_total", "port", "router", "direction", "tx")
	s.requireValue(t, 0, "vhost_arcnet_dhcp_leases", "state", "bound")
	s.requireValue(t, 0, "vhost_arcnet_forward_accepted_total", "forward", n.fwds[0].Spec().String())
	s.requireValue(t, 0, "vhost_arcnet_forward_failures_total", "forward", n.fwds[0].Spec().String(), "reason", "dial")
	s.requireValue(t, 0, "vhost_arcnet_forward_udp_dropped_total", "forward", n.fwds[1].Spec().String())
	_, ok := s.value("vhost_arcnet_forward_udp_dropped_total", "forward", n.fwds[0].Spec().String())
	require.False(t, ok, "UDP series only for UDP forwards")
	require.Contains(t, s, "go_goroutines")
}

// A query the gateway forwards to an upstream on loopback shows in
// vhost_arcnet_dns_upstream_latency_seconds, a histogram.
func TestCollectorDNSUpstreamLatency(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A: net.IPv4(203, 0, 113, 7)})
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	up.NotifyStartedFunc = func() { close(started) }
	go func() { _ = up.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = up.Shutdown() })

	gw, err := services.NewGateway(services.Config{Logger: slog.New(slog.DiscardHandler), DNSUpstreams: []string{pc.LocalAddr().String()}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = gw.Close() })
	n := &network{gw: gw, hp: datapath.NewHandlerPort("gateway", gw)}
	reg, err := newMetricsRegistry(&collector{ports: &ports{live: map[uint64]*guest{}}, net: n})
	require.NoError(t, err)

	const name = "vhost_arcnet_dns_upstream_latency_seconds"
	hist := func() *dto.Histogram {
		t.Helper()
		mf := gather(t, reg)[name]
		require.NotNil(t, mf, "no %s", name)
		require.Equal(t, dto.MetricType_HISTOGRAM, mf.GetType())
		require.Len(t, mf.GetMetric(), 1)
		return mf.GetMetric()[0].GetHistogram()
	}
	require.Zero(t, hist().GetSampleCount())

	q := new(dns.Msg)
	q.SetQuestion("www.example.", dns.TypeA)
	qb, err := q.Pack()
	require.NoError(t, err)
	replies := make(chan []byte, 1)
	gw.HandleFrame(testUDPFrame(testGuestMAC, header.MAC(gw.MAC()), testGuestIP, gw.Addr(), 5353, 53, qb), func(f []byte) {
		replies <- append([]byte(nil), f...)
	})
	select {
	case f := <-replies:
		var ans dns.Msg
		require.NoError(t, ans.Unpack(header.UDP(header.IPv4(f[14:]).Payload()).Payload()))
		require.Len(t, ans.Answer, 1)
	case <-time.After(10 * time.Second):
		t.Fatal("no DNS answer")
	}

	h := hist()
	require.Equal(t, uint64(1), h.GetSampleCount())
	require.Greater(t, h.GetSampleSum(), 0.0)
	b := h.GetBucket()
	require.Len(t, b, services.NumLatencyBounds)
	require.Equal(t, 0.0005, b[0].GetUpperBound())
	require.Equal(t, 2.5, b[len(b)-1].GetUpperBound())
	require.Equal(t, uint64(1), b[len(b)-1].GetCumulativeCount(), "a loopback exchange under 2.5 s")
	s := gather(t, reg)
	s.requireValue(t, 1, "vhost_arcnet_dns_upstream_queries_total")
	s.requireValue(t, 0, "vhost_arcnet_dns_upstream_errors_total")
}

// BenchmarkScrape measures one scrape with N guest ports live and N ended,
// and the guest network with the router, NAT and two forwards:
//
//   - http: GET /metrics as promhttp answers it (every collector, text
//     encoding), what a Prometheus server costs vhost-arcnet;
//   - collect: vhost-arcnet's own collector alone (Gather).
//
// The scrape only loads counters the datapath keeps anyway (atomics):
// the datapath's code is the same with and without --metrics, and the
// only lock on a packet's path a scrape takes is the NAT engine's, once,
// for BenchmarkScrapeNATLock's time (see metrics.go).
//
//	go test -run '^$' -bench Scrape ./cmd/vhost-arcnet/
func BenchmarkScrape(b *testing.B) {
	for _, nports := range []int{1, 16, 256} {
		n, _ := routedNetwork(b)
		reg := &ports{live: map[uint64]*guest{}}
		log := slog.New(slog.DiscardHandler)
		for i := range 2 * nports {
			p, err := datapath.NewGuestPort(datapath.GuestPortOptions{Name: fmt.Sprint("guest", i), QueuePairs: 1, Logger: log})
			require.NoError(b, err)
			p.Stats().RxPackets.Add(uint64(i))
			reg.add(uint64(i), &guest{port: p})
			if i >= nports {
				reg.end(uint64(i))
			}
		}
		c := &collector{ports: reg, net: n, natMaxFlows: 1024}
		b.Run(fmt.Sprintf("http/ports=%d", nports), func(b *testing.B) {
			pr, err := newMetricsRegistry(c)
			require.NoError(b, err)
			h := promhttp.HandlerFor(pr, promhttp.HandlerOpts{})
			req := httptest.NewRequest("GET", "/metrics", nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			require.Equal(b, 200, rec.Code)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
			b.ReportMetric(float64(rec.Body.Len()), "bytes/scrape")
		})
		b.Run(fmt.Sprintf("collect/ports=%d", nports), func(b *testing.B) {
			pr := prometheus.NewRegistry()
			pr.MustRegister(c)
			mfs, err := pr.Gather()
			require.NoError(b, err)
			series := 0
			for _, mf := range mfs {
				series += len(mf.GetMetric())
			}
			b.ReportAllocs()
			for b.Loop() {
				_, _ = pr.Gather()
			}
			b.ReportMetric(float64(series), "series")
		})
	}
}

// BenchmarkScrapeNATLock is the time a scrape holds the NAT engine's mutex
// to copy its counters (nat.Engine.Stats): the one lock on a packet's path
// that a scrape takes, once per scrape.
func BenchmarkScrapeNATLock(b *testing.B) {
	n, _ := routedNetwork(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = n.eng.Stats()
	}
}

// A guest port with several queue pairs has one series per pair and
// direction (datapath.QueueStats); a port without pairs has none.
func TestCollectorQueueSeries(t *testing.T) {
	n, _ := routedNetwork(t)
	reg := &ports{live: map[uint64]*guest{}}
	p, err := datapath.NewGuestPort(datapath.GuestPortOptions{Name: "guest7", QueuePairs: 3, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	for qp := 0; qp < 3; qp++ {
		qs := p.QueueStats(qp)
		qs.RxPackets.Add(uint64(10 + qp))
		qs.RxBytes.Add(uint64(1000 + qp))
		qs.TxPackets.Add(uint64(20 + qp))
		qs.TxBytes.Add(uint64(2000 + qp))
		qs.Held.Add(uint64(30 + qp))
	}
	reg.add(1, &guest{port: p})
	c, err := newMetricsRegistry(&collector{ports: reg, net: n, natMaxFlows: 1024})
	require.NoError(t, err)
	s := gather(t, c)
	for qp := 0; qp < 3; qp++ {
		q := fmt.Sprint(qp)
		s.requireValue(t, float64(10+qp), "vhost_arcnet_port_queue_packets_total", "port", "guest7", "queue", q, "direction", "rx")
		s.requireValue(t, float64(20+qp), "vhost_arcnet_port_queue_packets_total", "port", "guest7", "queue", q, "direction", "tx")
		s.requireValue(t, float64(1000+qp), "vhost_arcnet_port_queue_bytes_total", "port", "guest7", "queue", q, "direction", "rx")
		s.requireValue(t, float64(2000+qp), "vhost_arcnet_port_queue_bytes_total", "port", "guest7", "queue", q, "direction", "tx")
		s.requireValue(t, float64(30+qp), "vhost_arcnet_port_queue_held_total", "port", "guest7", "queue", q)
	}
	_, ok := s.value("vhost_arcnet_port_queue_packets_total", "port", "guest7", "queue", "3")
	require.False(t, ok, "a pair the port does not have")
	_, ok = s.value("vhost_arcnet_port_queue_packets_total", "port", "router")
	require.False(t, ok, "the router port has no queue pairs")
	require.Len(t, s["vhost_arcnet_port_queue_packets_total"].GetMetric(), 6)
}
