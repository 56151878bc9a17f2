package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/router"
	"github.com/arcnet/vhost-arcnet/nat"
	"github.com/arcnet/vhost-arcnet/services"
	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// --metrics ADDR serves the Prometheus exposition at http://ADDR/metrics.
//
// Nothing is counted for the metrics alone: a scrape reads the counters
// the datapath keeps anyway (datapath.Stats of every port, the gateway's
// counters and DNS upstream latency buckets, the router's and forwards'
// counters: atomic loads) and builds the series from them then. The datapath's code is the same with and without
// --metrics. What a scrape locks: the port registry of this command (a
// copy of the port list), the vhost-user server's session map (to count
// sessions), the lease database for reading (to count leases), and the NAT
// engine's mutex once, for the time it takes to copy its counters (the
// engine keeps them under its lock, not in atomics); nothing else the
// datapath takes. BenchmarkScrape measures a scrape.
//
// There is no authentication: whoever reaches ADDR reads the counters,
// port names and forwards. The flag therefore wants an explicit address
// (127.0.0.1:9100, or 0.0.0.0:9100 when asked for).

const ns = "vhost_arcnet"

// metricDescs are every series' description, for Describe.
var metricDescs []*prometheus.Desc

func newDesc(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc(ns+"_"+name, help, labels, nil)
	metricDescs = append(metricDescs, d)
	return d
}

// Per port. rx/tx are from the backend's side, as in the "port stats" log
// record: rx entered vhost-arcnet through the port (for a guest port, what
// the guest transmitted), tx left through it (written into the guest's
// receive queue).
var (
	descPortPackets = newDesc("port_packets_total", "Frames through a port: rx entered vhost-arcnet through it (a guest's transmissions), tx left through it (into a guest's receive queue).", "port", "direction")
	descPortBytes   = newDesc("port_bytes_total", "Bytes of the frames through a port, by direction as port_packets_total.", "port", "direction")
	descPortDrops   = newDesc("port_drops_total", "Frames a port dropped, by reason (datapath.DropReason).", "port", "reason")
	descPortUp      = newDesc("port_attached", "1 while the port is attached, 0 for one of the last ended guest ports still reported.", "port")
	// Per queue pair of a vhost-user guest port (datapath.QueueStats).
	descQueuePackets = newDesc("port_queue_packets_total", "Frames through one queue pair of a vhost-user guest port, by direction as port_packets_total (rx: the pair's transmit queue, tx: its receive queue); summed over the pairs, port_packets_total.", "port", "queue", "direction")
	descQueueBytes   = newDesc("port_queue_bytes_total", "Bytes of the frames through one queue pair, by direction as port_queue_packets_total.", "port", "queue", "direction")
	descQueueHeld    = newDesc("port_queue_held_total", "Frames that found the receive ring of a queue pair full and waited in its backlog (--rx-backlog) instead of being dropped.", "port", "queue")
)

// queuePorts are ports with per-queue-pair counters (datapath.GuestPort).
type queuePorts interface {
	QueuePairs() int
	QueueStats(qp int) *datapath.QueueStats
}

// vhost-user sessions.
var (
	descSessions        = newDesc("vhostuser_sessions", "vhost-user sessions (guest ports) running now.")
	descSessionsTotal   = newDesc("vhostuser_sessions_started_total", "vhost-user sessions started (accepted or connected).")
	descSessionMessages = newDesc("vhostuser_messages_total", "vhost-user requests handled.")
	descSessionEnds     = newDesc("vhostuser_sessions_ended_total", "vhost-user sessions ended, by cause: error (the frontend sent something invalid), disconnect (it went away).", "cause")
	descSessionRefused  = newDesc("vhostuser_refused_total", "vhost-user connections refused because no guest port could be made for them.")
	descDialFailures    = newDesc("vhostuser_dial_failures_total", "Failed attempts to connect to a frontend (--connect).")
)

// The gateway's services.
var (
	descGatewayFrames = newDesc("gateway_frames_total", "Frames the gateway's services took (in) and answered with (out).", "direction")
	descARPReplies    = newDesc("gateway_arp_replies_total", "ARP replies for the gateway's address.")
	descEchoReplies   = newDesc("gateway_icmp_echo_replies_total", "ICMP echo replies from the gateway.")
	descGatewayDrops  = newDesc("gateway_drops_total", "Frames or messages the gateway's services dropped, by reason.", "reason")
	descDHCPReceived  = newDesc("dhcp_received_total", "DHCP messages received, by type.", "type")
	descDHCPSent      = newDesc("dhcp_sent_total", "DHCP messages sent, by type.", "type")
	descDHCPExhausted = newDesc("dhcp_pool_exhausted_total", "DHCP DISCOVERs or REQUESTs that found no free address.")
	descLeaseWrites   = newDesc("dhcp_lease_file_writes_total", "Writes of the lease file.")
	descLeaseWErrors  = newDesc("dhcp_lease_file_write_errors_total", "Writes of the lease file that failed.")
	descLeases        = newDesc("dhcp_leases", "Records of the lease database, by state; bound leases past their expiry count as expired.", "state")
	descDNSQueries    = newDesc("dns_queries_total", "DNS queries received (UDP and TCP).")
	descDNSLocal      = newDesc("dns_local_answers_total", "DNS queries answered from the local zone (guests' names, the gateway, the host).")
	descDNSNXDomain   = newDesc("dns_nxdomain_total", "NXDOMAIN answers from the local zone.")
	descDNSCacheHits  = newDesc("dns_cache_hits_total", "DNS queries answered from the cache.")
	descDNSUpstream   = newDesc("dns_upstream_queries_total", "Exchanges with an upstream resolver started.")
	descDNSTCPRetries = newDesc("dns_upstream_tcp_retries_total", "Upstream answers that came back truncated and were asked again over TCP.")
	descDNSUpErrors   = newDesc("dns_upstream_errors_total", "Upstream exchanges that failed or were answered SERVFAIL or REFUSED.")
	descDNSUpLatency  = newDesc("dns_upstream_latency_seconds", "Latency of the exchanges with an upstream resolver that got an answer (UDP, and TCP after a truncated answer), from the query's send to the answer.")
	descDNSErrorsSent = newDesc("dns_error_answers_total", "Error answers sent, by rcode.", "rcode")
	descDNSTruncated  = newDesc("dns_truncated_total", "UDP answers truncated to the client's size (TC set).")
	descDNSTCPConns   = newDesc("dns_tcp_connections_total", "TCP connections to the gateway's DNS accepted.")
	descDNSTCPResets  = newDesc("dns_tcp_resets_total", "TCP resets the gateway sent.")
	descDNSTCPRetrans = newDesc("dns_tcp_retransmits_total", "TCP segments the gateway retransmitted.")
)

// gatewayCounters maps every services.Counter to its series and label
// values (TestGatewayCountersAllExported keeps it complete).
var gatewayCounters = [services.NumCounters]struct {
	desc   *prometheus.Desc
	labels []string
}{
	services.FramesIn:          {descGatewayFrames, []string{"in"}},
	services.FramesOut:         {descGatewayFrames, []string{"out"}},
	services.ARPReplies:        {descARPReplies, nil},
	services.ICMPEchoReplies:   {descEchoReplies, nil},
	services.DHCPDiscovers:     {descDHCPReceived, []string{"discover"}},
	services.DHCPOffers:        {descDHCPSent, []string{"offer"}},
	services.DHCPRequests:      {descDHCPReceived, []string{"request"}},
	services.DHCPAcks:          {descDHCPSent, []string{"ack"}},
	services.DHCPNaks:          {descDHCPSent, []string{"nak"}},
	services.DHCPReleases:      {descDHCPReceived, []string{"release"}},
	services.DHCPDeclines:      {descDHCPReceived, []string{"decline"}},
	services.DHCPInforms:       {descDHCPReceived, []string{"inform"}},
	services.DHCPPoolExhausted: {descDHCPExhausted, nil},
	services.LeaseWrites:       {descLeaseWrites, nil},
	services.LeaseWriteErrors:  {descLeaseWErrors, nil},
	services.DNSQueries:        {descDNSQueries, nil},
	services.DNSLocal:          {descDNSLocal, nil},
	services.DNSNXDomain:       {descDNSNXDomain, nil},
	services.DNSCacheHits:      {descDNSCacheHits, nil},
	services.DNSForwarded:      {descDNSUpstream, nil},
	services.DNSTCPRetries:     {descDNSTCPRetries, nil},
	services.DNSUpstreamErrs:   {descDNSUpErrors, nil},
	services.DNSServFail:       {descDNSErrorsSent, []string{"servfail"}},
	services.DNSFormErr:        {descDNSErrorsSent, []string{"formerr"}},
	services.DNSNotImp:         {descDNSErrorsSent, []string{"notimp"}},
	services.DNSTruncated:      {descDNSTruncated, nil},
	services.TCPConns:          {descDNSTCPConns, nil},
	services.TCPResets:         {descDNSTCPResets, nil},
	services.TCPRetransmits:    {descDNSTCPRetrans, nil},
}

// The router (--uplink tap). direction is out (guest -> uplink) or in.
var (
	descRouterPackets    = newDesc("router_packets_total", "Packets that entered the router to be routed, by direction (out: guest to uplink).", "direction")
	descRouterBytes      = newDesc("router_bytes_total", "Bytes of the packets that entered the router, by direction.", "direction")
	descRouterTranslated = newDesc("router_translated_total", "Packets the NAT engine passed and the router sent on, by direction.", "direction")
	descRouterDrops      = newDesc("router_drops_total", "Packets the router dropped, by direction and reason (the NAT engine's reasons, then the router's own: ttl, mtu, no_neighbour, router_malformed, no_uplink).", "direction", "reason")
	descRouterHairpin    = newDesc("router_hairpin_total", "Packets a guest sent to the NAT address that came back to a guest.")
	descRouterICMP       = newDesc("router_icmp_errors_sent_total", "ICMP errors the gateway sent to guests, by type.", "type")
	descRouterICMPLimit  = newDesc("router_icmp_rate_limited_total", "ICMP errors not sent because of the rate limit.")
	descRouterARP        = newDesc("router_arp_total", "ARP on the uplink: replies for the NAT address and the router's own requests for its next hop.", "kind")
	descRouterEcho       = newDesc("router_echo_replies_total", "Answers to pings of the NAT address.")
)

// The NAT engine (--uplink tap).
var (
	descNATFlows     = newDesc("nat_flows", "Live NAT flows by protocol (expired ones count until reclaimed).", "proto")
	descNATTCPStates = newDesc("nat_tcp_flows", "Live NAT TCP flows by state.", "state")
	descNATUDPMaps   = newDesc("nat_udp_mappings", "Live endpoint-independent UDP mappings.")
	descNATMax       = newDesc("nat_flows_max", "Size of the NAT flow table (--nat-max-flows).")
	descNATCreated   = newDesc("nat_flows_created_total", "NAT flows created.")
	descNATExpired   = newDesc("nat_flows_expired_total", "NAT flows reclaimed after expiring.")
	descNATPackets   = newDesc("nat_packets_total", "Packets the NAT engine translated, by the side they came from (out: from a guest).", "direction")
	descNATHairpin   = newDesc("nat_hairpin_total", "Packets translated guest to guest through the NAT address.")
	descNATICMP      = newDesc("nat_icmp_errors_total", "ICMP errors translated.")
	descNATFragments = newDesc("nat_fragments_total", "Non-first fragments translated.")
	descNATRefusals  = newDesc("nat_refusal_replies_total", "ICMP administratively-prohibited errors the engine generated for refused flows.")
	descNATDrops     = newDesc("nat_drops_total", "Packets the NAT engine dropped or refused, by reason.", "reason")
)

// descTAPInPlace: frames the TAP's readers wrote straight into a guest's
// receive buffers (datapath/inplace.go).
var descTAPInPlace = newDesc("tap_in_place_frames_total", "Frames read from the TAP straight into the guest's receive buffers (one copy of their payload instead of two).")

// Port forwards (--forward). forward is the spec as given, normalised.
var (
	descFwdAccepted = newDesc("forward_accepted_total", "TCP connections accepted or UDP sessions opened by a port forward.", "forward")
	descFwdActive   = newDesc("forward_active", "TCP connections or UDP sessions of a port forward open now.", "forward")
	descFwdFailures = newDesc("forward_failures_total", "Connections or sessions closed because the guest could not be resolved (prepare) or reached (dial).", "forward", "reason")
	descFwdBytes    = newDesc("forward_bytes_total", "Payload bytes relayed by a port forward, to the guest or from it.", "forward", "direction")
	descFwdUDPEnds  = newDesc("forward_udp_sessions_closed_total", "UDP sessions of a port forward closed for being idle or to make room.", "forward", "reason")
	descFwdUDPDrops = newDesc("forward_udp_dropped_total", "Datagrams a UDP port forward dropped.", "forward")
)

// collector is the prometheus.Collector of vhost-arcnet: it reads the
// counters at scrape time (see the top of this file).
type collector struct {
	ports *ports
	net   *network // nil with a measurement uplink
	srv   *vhostuser.Server
	// natMaxFlows is the NAT table's size, for nat_flows_max.
	natMaxFlows int
}

// Describe sends every series' description.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range metricDescs {
		ch <- d
	}
}

// Collect reads every counter once.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	seen := map[string]bool{}
	live, ended := c.ports.snapshot()
	for _, g := range live {
		for _, p := range g.ports() {
			c.port(ch, seen, p, true)
		}
	}
	for _, g := range ended {
		for _, p := range g.ports() {
			c.port(ch, seen, p, false)
		}
	}

	if c.srv != nil {
		st := c.srv.Stats()
		gauge(descSessions, float64(st.Active))
		counter(descSessionsTotal, st.Sessions)
		counter(descSessionMessages, st.Messages)
		counter(descSessionEnds, st.Errors, "error")
		counter(descSessionEnds, st.Disconnects, "disconnect")
		counter(descSessionRefused, st.Refused)
		counter(descDialFailures, st.DialFailures)
	}

	n := c.net
	if n == nil {
		return
	}
	c.port(ch, seen, n.hp, true)
	if n.rt != nil {
		c.port(ch, seen, n.rt.SwitchPort(), true)
		c.port(ch, seen, n.rt.UplinkPort(), true)
	}
	if n.uplink != nil {
		c.port(ch, seen, n.uplink, true)
	}
	if n.tap != nil {
		counter(descTAPInPlace, n.tap.InPlaceFrames())
	}
	c.collectGateway(ch, n.gw)
	if n.rt != nil {
		collectRouter(ch, n.rt.Stats())
	}
	if n.eng != nil {
		c.collectNAT(ch, n.eng)
	}
	for _, f := range n.forwarders() {
		name := f.Spec().String()
		st := f.Stats()
		counter(descFwdAccepted, st.Accepted, name)
		gauge(descFwdActive, float64(st.Active), name)
		counter(descFwdFailures, st.FailedPrepare, name, "prepare")
		counter(descFwdFailures, st.FailedDial, name, "dial")
		counter(descFwdBytes, st.ToGuestBytes, name, "to_guest")
		counter(descFwdBytes, st.FromGuestBytes, name, "from_guest")
		if f.Spec().Proto == "udp" {
			counter(descFwdUDPEnds, st.UDPExpired, name, "idle")
			counter(descFwdUDPEnds, st.UDPEvicted, name, "evicted")
			counter(descFwdUDPDrops, st.UDPDropped, name)
		}
	}
}

// port sends one port's series, once per port name (a TAP named like one
// of the ports of vhost-arcnet would be a duplicate series: the first one
// wins).
func (c *collector) port(ch chan<- prometheus.Metric, seen map[string]bool, p datapath.Port, attached bool) {
	name := p.Name()
	if seen[name] {
		return
	}
	seen[name] = true
	st := p.Stats()
	ch <- prometheus.MustNewConstMetric(descPortPackets, prometheus.CounterValue, float64(st.RxPackets.Load()), name, "rx")
	ch <- prometheus.MustNewConstMetric(descPortPackets, prometheus.CounterValue, float64(st.TxPackets.Load()), name, "tx")
	ch <- prometheus.MustNewConstMetric(descPortBytes, prometheus.CounterValue, float64(st.RxBytes.Load()), name, "rx")
	ch <- prometheus.MustNewConstMetric(descPortBytes, prometheus.CounterValue, float64(st.TxBytes.Load()), name, "tx")
	for r := datapath.DropReason(0); r < datapath.NumDropReasons; r++ {
		ch <- prometheus.MustNewConstMetric(descPortDrops, prometheus.CounterValue, float64(st.Drops(r)), name, r.String())
	}
	if qp, ok := p.(queuePorts); ok {
		for i := 0; i < qp.QueuePairs(); i++ {
			qs, q := qp.QueueStats(i), strconv.Itoa(i)
			ch <- prometheus.MustNewConstMetric(descQueuePackets, prometheus.CounterValue, float64(qs.RxPackets.Load()), name, q, "rx")
			ch <- prometheus.MustNewConstMetric(descQueuePackets, prometheus.CounterValue, float64(qs.TxPackets.Load()), name, q, "tx")
			ch <- prometheus.MustNewConstMetric(descQueueBytes, prometheus.CounterValue, float64(qs.RxBytes.Load()), name, q, "rx")
			ch <- prometheus.MustNewConstMetric(descQueueBytes, prometheus.CounterValue, float64(qs.TxBytes.Load()), name, q, "tx")
			ch <- prometheus.MustNewConstMetric(descQueueHeld, prometheus.CounterValue, float64(qs.Held.Load()), name, q)
		}
	}
	up := 0.0
	if attached {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descPortUp, prometheus.GaugeValue, up, name)
}

func (c *collector) collectGateway(ch chan<- prometheus.Metric, gw *services.Gateway) {
	st := gw.Stats()
	for i, m := range gatewayCounters {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(st.Get(services.Counter(i))), m.labels...)
	}
	for r := services.DropReason(0); r < services.NumDropReasons; r++ {
		ch <- prometheus.MustNewConstMetric(descGatewayDrops, prometheus.CounterValue, float64(st.Drops(r)), r.String())
	}
	collectLatency(ch, descDNSUpLatency, gw.UpstreamLatency())
	counts := map[string]int{"offered": 0, "bound": 0, "expired": 0, "released": 0, "declined": 0}
	now := time.Now()
	for _, l := range gw.Leases() {
		s := l.State.String()
		if l.State == services.LeaseBound && !l.Expires.After(now) {
			s = "expired"
		}
		counts[s]++
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(n), s)
	}
}

// collectLatency sends a services latency histogram as a Prometheus
// histogram in seconds.
func collectLatency(ch chan<- prometheus.Metric, d *prometheus.Desc, h services.LatencySnapshot) {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var n uint64
	for i, b := range h.Bounds {
		n += h.Buckets[i]
		buckets[b.Seconds()] = n
	}
	ch <- prometheus.MustNewConstHistogram(d, h.Count, h.Sum.Seconds(), buckets)
}

var directions = [...]router.Direction{router.Out, router.In}

// routerReasons are the reason labels of router_drops_total: the router's
// own reasons follow the NAT engine's, and one whose name the engine uses
// already (malformed) becomes router_NAME.
var routerReasons = func() (names [router.NumDropReasons]string) {
	taken := map[string]bool{}
	for r := router.DropReason(0); r < router.NumDropReasons; r++ {
		n := r.String()
		if taken[n] {
			n = "router_" + n
		}
		taken[n] = true
		names[r] = n
	}
	return names
}()

func collectRouter(ch chan<- prometheus.Metric, st *router.Stats) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for i, d := range directions {
		dir := d.String()
		counter(descRouterPackets, st.Packets[i].Load(), dir)
		counter(descRouterBytes, st.Bytes[i].Load(), dir)
		counter(descRouterTranslated, st.Translated[i].Load(), dir)
		for r := router.DropReason(0); r < router.NumDropReasons; r++ {
			if r == router.DropReason(nat.ReasonNone) {
				continue
			}
			counter(descRouterDrops, st.Drops(d, r), dir, routerReasons[r])
		}
	}
	counter(descRouterHairpin, st.Hairpin.Load())
	counter(descRouterICMP, st.ICMPTimeExceeded.Load(), "time_exceeded")
	counter(descRouterICMP, st.ICMPFragNeeded.Load(), "frag_needed")
	counter(descRouterICMPLimit, st.ICMPRateLimited.Load())
	counter(descRouterARP, st.ARPReplies.Load(), "reply")
	counter(descRouterARP, st.ARPRequests.Load(), "request")
	counter(descRouterEcho, st.EchoReplies.Load())
}

// collectNAT copies the engine's counters: the one lock of the datapath a
// scrape takes, held for a struct copy.
func (c *collector) collectNAT(ch chan<- prometheus.Metric, eng *nat.Engine) {
	st := eng.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	gauge(descNATFlows, st.FlowsTCP, "tcp")
	gauge(descNATFlows, st.FlowsUDP, "udp")
	gauge(descNATFlows, st.FlowsICMP, "icmp")
	for s := nat.TCPState(0); s < nat.NumTCPStates; s++ {
		gauge(descNATTCPStates, st.TCPStates[s], strings.ReplaceAll(s.String(), "-", "_"))
	}
	gauge(descNATUDPMaps, st.UDPMappings)
	gauge(descNATMax, uint64(c.natMaxFlows))
	counter(descNATCreated, st.Created)
	counter(descNATExpired, st.Expired)
	counter(descNATPackets, st.Outbound, "out")
	counter(descNATPackets, st.Inbound, "in")
	counter(descNATHairpin, st.Hairpin)
	counter(descNATICMP, st.ICMPErrors)
	counter(descNATFragments, st.Fragments)
	counter(descNATRefusals, st.RefusalReplies)
	for r := nat.Reason(1); r < nat.NumReasons; r++ {
		counter(descNATDrops, st.Drops[r], strings.ReplaceAll(r.String(), "-", "_"))
	}
}

// metricsServer is the HTTP server of --metrics.
type metricsServer struct {
	srv  *http.Server
	addr net.Addr
	done chan struct{}
}

// newMetricsRegistry is the registry a scrape reads: c, the process's
// collector (CPU, memory, fds) and the Go runtime's.
func newMetricsRegistry(c prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, col := range []prometheus.Collector{
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		c,
	} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// startMetrics listens on addr and serves c's registry at /metrics.
func startMetrics(addr string, c prometheus.Collector, log *slog.Logger) (*metricsServer, error) {
	reg, err := newMetricsRegistry(c)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "vhost-arcnet: Prometheus metrics at /metrics")
	})
	m := &metricsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		addr: ln.Addr(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics", "url", "http://"+m.addr.String()+"/metrics")
	return m, nil
}

// close stops the server, letting a scrape in progress finish (up to 2 s).
func (m *metricsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		_ = m.srv.Close()
	}
	<-m.done
}
