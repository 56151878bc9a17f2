package router

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/datapathtest"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/nat"
)

// The cost of the wiring: the same outbound packets (one TCP ACK of 64 B
// per flow, flows cycled in batches of 64) through
//
//   - nat:           nat.Engine.Translate alone, on a copy of the IPv4
//     header (what nat's BenchmarkTranslate measures);
//   - router:        the router's switch side (head copy, TTL, MTU, NAT,
//     Ethernet rewrite, hand-off to a counting uplink);
//   - switch+router: a guest port's frames entering a datapath.Switch
//     (head copy, anti-spoofing off, MAC lookup) and on through the router.
//
// Run: go test -run '^$' -bench Wiring -benchtime 2s ./datapath/router/

var (
	benchSubnet = netip.MustParsePrefix("10.0.0.0/16")
	benchGW     = netip.MustParseAddr("10.0.0.1")
)

// benchFrames returns one 64-byte Ethernet frame per flow: guest
// 10.0.1.(j%250) port 1024+j/250 to 100.64.(j%256).1:443.
func benchFrames(n int) [][]byte {
	out := make([][]byte, n)
	for j := range n {
		g := j % 250
		src := netip.AddrFrom4([4]byte{10, 0, 1, byte(g)})
		dst := netip.AddrFrom4([4]byte{100, 64, byte(j % 256), 1})
		out[j] = pkt{dstMAC: gwMAC, srcMAC: header.MAC{2, 1, 0, 0, 0, byte(g)}, src: src, dst: dst,
			proto: header.ProtoTCP, sport: uint16(1024 + j/250), dport: 443, tcpFlags: 0x10, payload: 10}.build()
	}
	return out
}

func benchRouter(b testing.TB, n int) (*Router, *nat.Engine, *datapathtest.Capture) {
	eng, err := nat.New(nat.Config{External: extAddr, GuestPrefix: benchSubnet, MaxFlows: 2 * n, MaxFlowsPerGuest: 2 * n})
	if err != nil {
		b.Fatal(err)
	}
	up := countOnly("sink")
	r, err := New(Options{Subnet: benchSubnet, GatewayAddr: benchGW, GatewayMAC: gwMAC, Local: countOnly("local"),
		NAT: eng, ExternalAddr: extAddr, UplinkMAC: upMAC, NextHop: hopAddr, NextHopMAC: hopMAC})
	if err != nil {
		b.Fatal(err)
	}
	r.SwitchPort().(*lanPort).SetPeer(countOnly("lan"))
	r.SetUplink(up)
	return r, eng, up
}

// cycle sends every batch once (the warm-up opens the flows), then b.N
// batches in turn, timed, and reports Mpps; it returns how many frames the
// timed loop sent.
func cycle(b *testing.B, batches [][]datapath.Frame, send func([]datapath.Frame)) int {
	for _, bf := range batches {
		send(bf)
	}
	b.ResetTimer()
	b.ReportAllocs()
	pk := 0
	for i := 0; i < b.N; i++ {
		bf := batches[i%len(batches)]
		send(bf)
		pk += len(bf)
	}
	b.ReportMetric(float64(pk)/b.Elapsed().Seconds()/1e6, "Mpps")
	return pk
}

func BenchmarkWiring(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		frames := benchFrames(n)
		batches := make([][]datapath.Frame, 0, n/datapath.MaxBatch+1)
		for i := 0; i < n; i += datapath.MaxBatch {
			var bf []datapath.Frame
			for _, f := range frames[i:min(i+datapath.MaxBatch, n)] {
				bf = append(bf, datapath.Frame{Segs: [][]byte{f}, Len: len(f)})
			}
			batches = append(batches, bf)
		}
		b.Run(fmt.Sprintf("nat/flows=%d", n), func(b *testing.B) {
			_, eng, _ := benchRouter(b, n)
			pkts := make([]nat.Packet, datapath.MaxBatch)
			bufs := make([][headCopy]byte, datapath.MaxBatch)
			run := func(bf []datapath.Frame) {
				for i := range bf {
					k := copy(bufs[i][:], bf[i].Segs[0][header.EthernetMinSize:])
					pkts[i] = nat.Packet{Buf: bufs[i][:k]}
				}
				eng.Translate(nat.Guest, pkts[:len(bf)])
			}
			cycle(b, batches, run)
			if pkts[0].Verdict != nat.ToUplink {
				b.Fatalf("verdict %v %v", pkts[0].Verdict, pkts[0].Reason)
			}
		})
		b.Run(fmt.Sprintf("router/flows=%d", n), func(b *testing.B) {
			r, _, up := benchRouter(b, n)
			if pk := cycle(b, batches, r.SwitchPort().Send); up.Count() < pk {
				b.Fatalf("uplink got %d of %d", up.Count(), pk)
			}
		})
		b.Run(fmt.Sprintf("switch+router/flows=%d", n), func(b *testing.B) {
			r, _, up := benchRouter(b, n)
			sw, err := datapath.NewSwitch(datapath.SwitchOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := sw.Attach(r.SwitchPort(), datapath.PortOptions{MAC: gwMAC, AllowSpoofing: true}); err != nil {
				b.Fatal(err)
			}
			guest := countOnly("guests")
			gsp, err := sw.Attach(guest, datapath.PortOptions{AllowSpoofing: true})
			if err != nil {
				b.Fatal(err)
			}
			if pk := cycle(b, batches, gsp.Send); up.Count() < pk {
				b.Fatalf("uplink got %d of %d", up.Count(), pk)
			}
		})
	}
}

// A check that the benchmark's frames are what they claim: every flow
// translated, distinct external tuples.
func TestBenchFrames(t *testing.T) {
	r, eng, up := benchRouter(t, 1000)
	frames := benchFrames(1000)
	for _, f := range frames {
		r.SwitchPort().Send([]datapath.Frame{{Segs: [][]byte{f}, Len: len(f)}})
	}
	if up.Count() != 1000 || eng.Len() != 1000 {
		t.Fatalf("uplink %d frames, %d flows; want 1000, 1000", up.Count(), eng.Len())
	}
}
