//go:build linux

package datapath_test

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/services"
)

// The gateway's answer rate under load from a guest (issue 3): one Go
// vhost-user frontend on a real server, its GuestPort and the gateway's
// services on one Switch, as the command wires them. The guest keeps a
// window of queries in flight and drains the answers; queries/s is what
// the backend (transmit worker, switch, services, receive path) answers
// with the frontend on the same machine:
//
//	go test -run '^$' -bench GatewayVhostUser ./datapath/
func BenchmarkGatewayVhostUser(b *testing.B) {
	b.Run("dns-local", func(b *testing.B) {
		q := new(dns.Msg)
		q.SetQuestion("gateway.arcnet.internal.", dns.TypeA)
		payload, err := q.Pack()
		if err != nil {
			b.Fatal(err)
		}
		benchGateway(b, udpFrame(benchMACA, services.DefaultMAC, benchIPA, gatewayIP, 5353, 53, payload))
	})
	b.Run("dhcp-discover", func(b *testing.B) {
		d, err := dhcpv4.NewDiscovery(net.HardwareAddr(benchMACA[:]))
		if err != nil {
			b.Fatal(err)
		}
		benchGateway(b, udpFrame(benchMACA, header.BroadcastMAC[:], netip.IPv4Unspecified(),
			netip.AddrFrom4([4]byte{255, 255, 255, 255}), 68, 67, d.ToBytes()))
	})
}

var gatewayIP = netip.MustParseAddr("192.168.127.1")

// udpFrame builds an Ethernet/IPv4/UDP frame (UDP checksum 0: none).
func udpFrame(src header.MAC, dst []byte, sip, dip netip.Addr, sport, dport uint16, payload []byte) []byte {
	n := 14 + 20 + 8 + len(payload)
	f := make([]byte, n)
	header.Ethernet(f).Encode(&header.EthernetFields{Dst: header.MAC(dst), Src: src, EtherType: header.EtherTypeIPv4})
	header.IPv4(f[14:]).Encode(&header.IPv4Fields{TotalLength: uint16(n - 14), TTL: 64, Protocol: header.ProtoUDP, Src: sip, Dst: dip})
	header.UDP(f[34:]).Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(n - 34)})
	copy(f[42:], payload)
	return f
}

func benchGateway(b *testing.B, query []byte) {
	log := slog.New(slog.DiscardHandler)
	gw, err := services.NewGateway(services.Config{Logger: log, DNSUpstreams: []string{"127.0.0.1:9"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = gw.Close() })
	// The guest's address counts as leased: anti-spoofing stays on.
	sw, err := datapath.NewSwitch(datapath.SwitchOptions{Leases: benchLeases{}, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := sw.Attach(datapath.NewHandlerPort("gateway", gw), datapath.PortOptions{MAC: header.MAC(gw.MAC()), AllowSpoofing: true}); err != nil {
		b.Fatal(err)
	}
	start, ports := benchServer(b, sw)
	f := start()
	gp := <-ports

	const window = 64
	answered, sent := 0, 0
	deadline := time.Now().Add(time.Minute)
	b.ReportAllocs()
	b.ResetTimer()
	for answered < b.N {
		for sent < b.N && sent-answered < window {
			if err := f.Send(query); err != nil {
				b.Fatal(err)
			}
			sent++
		}
		n, _ := f.Drain()
		answered += n
		if n == 0 {
			if time.Now().After(deadline) {
				b.Fatalf("stalled: %d sent, %d answered; guest port %v; gateway %v", sent, answered,
					gp.Stats().LogAttrs(), gw.Stats().LogAttrs())
			}
			if _, err := f.WaitCall(0); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}
