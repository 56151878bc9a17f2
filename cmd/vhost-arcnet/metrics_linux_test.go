//go:build linux

package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/services"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
)

// logRecords keeps run's log records, for the test to wait on them.
type logRecords struct {
	mu   sync.Mutex
	recs []map[string]string // "msg" and the attributes
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	l.mu.Lock()
	l.recs = append(l.recs, m)
	l.mu.Unlock()
	return nil
}

// wait returns the first record with message msg, waiting up to 10 s.
func (l *logRecords) wait(t *testing.T, msg string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, r := range l.recs {
			if r["msg"] == msg {
				l.mu.Unlock()
				return r
			}
		}
		l.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %q log record within 10 s", msg)
	return nil
}

// scrapeURL gets url and parses the text exposition.
func scrapeURL(t *testing.T, url string) scrape {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return scrape(mfs)
}

// testGuest is the Go vhost-user frontend as a guest: it sends frames it
// builds and waits for the answers it expects.
type testGuest struct {
	t  *testing.T
	f  guestLink
	ip netip.Addr
	// sent and received count the frames.
	sent, received int
}

// guestLink is how a test guest's frames travel: a Go vhost-user frontend
// (*vhostusertest.Frontend) or a frame socket (framesock_linux_test.go).
type guestLink interface {
	Send(frame []byte) error
	WaitRecv() ([]byte, error)
	Disconnect()
}

func (g *testGuest) send(fr []byte) {
	g.t.Helper()
	require.NoError(g.t, g.f.Send(fr))
	g.sent++
}

// recvUDP waits for a UDP datagram to port dport and returns its payload.
func (g *testGuest) recvUDP(dport uint16) []byte {
	g.t.Helper()
	for {
		fr, err := g.f.WaitRecv()
		require.NoError(g.t, err)
		g.received++
		e := header.Ethernet(fr)
		if !e.IsValid() || e.EtherType() != header.EtherTypeIPv4 {
			continue
		}
		ip := header.IPv4(e.Payload())
		if !ip.IsValid() || ip.Protocol() != header.ProtoUDP {
			continue
		}
		u := header.UDP(ip.Payload())
		if u.DstPort() == dport {
			return u.Payload()
		}
	}
}

// A scrape after known traffic from a guest (DHCP, DNS, ARP through the
// real run function, --uplink none) has the expected series and values.
func TestMetricsAfterTraffic(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vm.sock")
	cfg, err := parseFlags([]string{"--socket", sock, "--uplink", "none", "--lease-file", "none",
		"--dns-upstream", "127.0.0.1:9", "--metrics", "127.0.0.1:0"}, io.Discard)
	require.NoError(t, err)
	logs, _ := startRun(t, cfg)
	url := logs.wait(t, "metrics")["url"]
	logs.wait(t, "listening")

	f := vhostusertest.New(t, vhostusertest.Options{Timeout: 5 * time.Second})
	require.NoError(t, f.Dial(sock))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(1, 256))
	g := &testGuest{t: t, f: f}

	// Scrapes run while the guest's traffic flows (go test -race checks
	// that they only read what the datapath publishes).
	stopScraping, scraping := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(scraping)
		for {
			select {
			case <-stopScraping:
				return
			case <-t.Context().Done(): // the test failed before stopping it
				return
			default:
			}
			if resp, err := http.Get(url); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	gwMAC := header.MAC(services.DefaultMAC)
	gwIP := netip.MustParseAddr("192.168.127.1")
	bcast, any4 := netip.AddrFrom4([4]byte{255, 255, 255, 255}), netip.IPv4Unspecified()

	// DHCP: DISCOVER, OFFER, REQUEST, ACK.
	disc, err := dhcpv4.NewDiscovery(net.HardwareAddr(testGuestMAC[:]))
	require.NoError(t, err)
	g.send(testUDPFrame(testGuestMAC, header.BroadcastMAC, any4, bcast, 68, 67, disc.ToBytes()))
	offer, err := dhcpv4.FromBytes(g.recvUDP(68))
	require.NoError(t, err)
	require.Equal(t, dhcpv4.MessageTypeOffer, offer.MessageType())
	req, err := dhcpv4.NewRequestFromOffer(offer)
	require.NoError(t, err)
	g.send(testUDPFrame(testGuestMAC, header.BroadcastMAC, any4, bcast, 68, 67, req.ToBytes()))
	ack, err := dhcpv4.FromBytes(g.recvUDP(68))
	require.NoError(t, err)
	require.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
	g.ip, _ = netip.AddrFromSlice(ack.YourIPAddr.To4())

	// DNS: the gateway's own name, answered locally.
	q := new(dns.Msg)
	q.SetQuestion("gateway.arcnet.internal.", dns.TypeA)
	qb, err := q.Pack()
	require.NoError(t, err)
	g.send(testUDPFrame(testGuestMAC, gwMAC, g.ip, gwIP, 5353, 53, qb))
	var ans dns.Msg
	require.NoError(t, ans.Unpack(g.recvUDP(5353)))
	require.Len(t, ans.Answer, 1)

	// ARP for the gateway.
	arp := make([]byte, header.EthernetMinSize+header.ARPSize)
	header.Ethernet(arp).Encode(&header.EthernetFields{Dst: header.BroadcastMAC, Src: testGuestMAC, EtherType: header.EtherTypeARP})
	header.ARP(arp[header.EthernetMinSize:]).Encode(&header.ARPFields{Op: header.ARPRequest,
		SenderMAC: testGuestMAC, SenderIP: g.ip, TargetIP: gwIP})
	g.send(arp)
	reply, err := f.WaitRecv()
	require.NoError(t, err)
	g.received++
	require.Equal(t, header.EtherTypeARP, header.Ethernet(reply).EtherType())
	for !f.TxDone(0) {
		time.Sleep(time.Millisecond)
	}
	close(stopScraping)
	<-scraping

	s := scrapeURL(t, url)
	port := func(dir string) []string { return []string{"port", "guest0", "direction", dir} }
	s.requireValue(t, float64(g.sent), "vhost_arcnet_port_packets_total", port("rx")...)
	s.requireValue(t, float64(g.received), "vhost_arcnet_port_packets_total", port("tx")...)
	s.requireValue(t, 1, "vhost_arcnet_port_attached", "port", "guest0")
	s.requireValue(t, float64(g.sent), "vhost_arcnet_port_queue_packets_total", "port", "guest0", "queue", "0", "direction", "rx")
	s.requireValue(t, float64(g.received), "vhost_arcnet_port_queue_packets_total", "port", "guest0", "queue", "0", "direction", "tx")
	s.requireValue(t, 0, "vhost_arcnet_port_drops_total", "port", "guest0", "reason", "spoof")
	s.requireValue(t, float64(g.sent), "vhost_arcnet_port_packets_total", "port", "gateway", "direction", "tx")
	s.requireValue(t, 1, "vhost_arcnet_dhcp_received_total", "type", "discover")
	s.requireValue(t, 1, "vhost_arcnet_dhcp_received_total", "type", "request")
	s.requireValue(t, 1, "vhost_arcnet_dhcp_sent_total", "type", "offer")
	s.requireValue(t, 1, "vhost_arcnet_dhcp_sent_total", "type", "ack")
	s.requireValue(t, 0, "vhost_arcnet_dhcp_sent_total", "type", "nak")
	s.requireValue(t, 1, "vhost_arcnet_dhcp_leases", "state", "bound")
	s.requireValue(t, 1, "vhost_arcnet_dns_queries_total")
	s.requireValue(t, 1, "vhost_arcnet_dns_local_answers_total")
	s.requireValue(t, 0, "vhost_arcnet_dns_cache_hits_total")
	s.requireValue(t, 0, "vhost_arcnet_dns_upstream_errors_total")
	s.requireValue(t, 1, "vhost_arcnet_gateway_arp_replies_total")
	s.requireValue(t, float64(g.sent), "vhost_arcnet_gateway_frames_total", "direction", "in")
	s.requireValue(t, 0, "vhost_arcnet_gateway_drops_total", "reason", "malformed")
	s.requireValue(t, 1, "vhost_arcnet_vhostuser_sessions")
	s.requireValue(t, 1, "vhost_arcnet_vhostuser_sessions_started_total")
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines", "go_memstats_heap_alloc_bytes"} {
		require.Contains(t, s, name)
	}
	_, routed := s["vhost_arcnet_nat_flows"]
	require.False(t, routed, "no NAT series without an uplink")

	// The guest goes away: its counters stay, marked ended.
	f.Disconnect()
	logs.wait(t, "guest port detached")
	s = scrapeURL(t, url)
	s.requireValue(t, 0, "vhost_arcnet_port_attached", "port", "guest0")
	s.requireValue(t, float64(g.sent), "vhost_arcnet_port_packets_total", port("rx")...)
	s.requireValue(t, 0, "vhost_arcnet_vhostuser_sessions")
	s.requireValue(t, 1, "vhost_arcnet_vhostuser_sessions_ended_total", "cause", "disconnect")
}

// --metrics on an address in use fails run with the flag's name.
func TestMetricsListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	cfg, err := parseFlags([]string{"--socket", filepath.Join(t.TempDir(), "s"), "--lease-file", "none",
		"--metrics", ln.Addr().String()}, io.Discard)
	require.NoError(t, err)
	err = run(context.Background(), cfg, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "--metrics: listen tcp "+ln.Addr().String())
}
