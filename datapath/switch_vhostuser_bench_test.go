//go:build linux

package datapath_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Guest to guest end to end: two in-process Go vhost-user frontends
// (memfd guest memory, eventfd kicks and calls, real unix socket) on one
// vhostuser.Server whose devices are GuestPorts on a Switch, as the command
// wires them. The sending frontend copies each frame into its transmit
// buffers (as a guest's stack would), the backend's transmit worker
// switches it into the receiving frontend's buffers, which a second
// goroutine drains. Everything shares the machine's cores, so the figures
// are lower and noisier than BenchmarkGuestToGuest's:
//
//	go test -run '^$' -bench GuestToGuestVhostUser ./datapath/

// benchLeases leases benchIPA to benchMACA and benchIPB to benchMACB.
type benchLeases struct{}

func (benchLeases) LeasedIP(m header.MAC) (netip.Addr, bool) {
	switch m {
	case benchMACA:
		return benchIPA, true
	case benchMACB:
		return benchIPB, true
	}
	return netip.Addr{}, false
}

func (benchLeases) LeaseGeneration() uint64 { return 1 }

func BenchmarkGuestToGuestVhostUser(b *testing.B) {
	for _, c := range []struct {
		name string
		size int
		gso  bool
	}{
		{"64B", 64, false},
		{"1500B", 1500, false},
		{"64KiB-GSO", 65536, true},
	} {
		b.Run(c.name, func(b *testing.B) { benchVhostUser(b, c.size, c.gso) })
	}
}

var (
	benchMACA = header.MAC{0x52, 0x54, 0, 0, 1, 0x0a}
	benchMACB = header.MAC{0x52, 0x54, 0, 0, 1, 0x0b}
	benchIPA  = netip.MustParseAddr("192.168.127.10")
	benchIPB  = netip.MustParseAddr("192.168.127.11")
)

// benchFrame builds the frame the sender transmits: UDP of size bytes, or
// a TCP GSO frame of size bytes (gso_size 1448, partial checksum).
func benchFrame(size int, gso bool) ([]byte, virtio.NetHdr) {
	var h virtio.NetHdr
	b := make([]byte, size)
	header.Ethernet(b).Encode(&header.EthernetFields{Dst: benchMACB, Src: benchMACA, EtherType: header.EtherTypeIPv4})
	ip := header.IPv4(b[14:])
	proto, l4 := header.ProtoUDP, 8
	if gso {
		proto, l4 = header.ProtoTCP, 20
	}
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(size - 14), TTL: 64, Protocol: proto, Src: benchIPA, Dst: benchIPB})
	if gso {
		header.TCP(b[34:]).Encode(&header.TCPFields{SrcPort: 1, DstPort: 2, Flags: header.TCPFlagACK, Window: 100})
		header.TCP(b[34:]).SetChecksum(ip.PseudoHeaderChecksum(header.ProtoTCP, 0))
		h = virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 1448,
			HdrLen: uint16(34 + l4), CsumStart: 34, CsumOffset: 16}
	} else {
		header.UDP(b[34:]).Encode(&header.UDPFields{SrcPort: 1, DstPort: 2, Length: uint16(size - 34)})
	}
	return b, h
}

// benchServer serves vhost-user on a socket in a temporary directory; every
// connection becomes a GuestPort attached to sw, sent on the returned
// channel. start dials a new Go frontend and sets up one queue pair.
func benchServer(b *testing.B, sw *datapath.Switch) (start func() *vhostusertest.Frontend, ports chan *datapath.GuestPort) {
	log := slog.New(slog.DiscardHandler)
	ports = make(chan *datapath.GuestPort, 2)
	srv, err := vhostuser.NewServer(vhostuser.Options{
		Logger: log,
		NewDevice: func(info vhostuser.SessionInfo) (vhostuser.Device, error) {
			gp, err := datapath.NewGuestPort(datapath.GuestPortOptions{Name: fmt.Sprint("guest", info.ID-1), QueuePairs: 1, Logger: log})
			if err != nil {
				return nil, err
			}
			if _, err := sw.Attach(gp, datapath.PortOptions{}); err != nil {
				return nil, err
			}
			ports <- gp
			return gp, nil
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	path := filepath.Join(dir, "s")
	if err := srv.Listen(path); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx) }()
	b.Cleanup(func() { cancel(); <-done })

	start = func() *vhostusertest.Frontend {
		f := vhostusertest.New(b, vhostusertest.Options{Timeout: 30 * time.Second})
		if err := f.Dial(path); err != nil {
			b.Fatal(err)
		}
		if err := f.Negotiate(0); err != nil { // everything offered: CSUM, TSO, MRG_RXBUF, EVENT_IDX
			b.Fatal(err)
		}
		if err := f.SetupQueues(1, benchRing); err != nil {
			b.Fatal(err)
		}
		return f
	}
	return start, ports
}

const benchRing = 1024

func benchVhostUser(b *testing.B, size int, gso bool) {
	log := slog.New(slog.DiscardHandler)
	sw, err := datapath.NewSwitch(datapath.SwitchOptions{Leases: benchLeases{}, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	start, ports := benchServer(b, sw)
	const ring = benchRing
	fa, fb := start(), start()
	gpA, gpB := <-ports, <-ports
	// b makes itself known (ARP) so that a's frames to it are unicast.
	arp := make([]byte, 14+header.ARPSize)
	header.Ethernet(arp).Encode(&header.EthernetFields{Dst: header.BroadcastMAC, Src: benchMACB, EtherType: header.EtherTypeARP})
	header.ARP(arp[14:]).Encode(&header.ARPFields{Op: header.ARPRequest, SenderMAC: benchMACB, SenderIP: benchIPB, TargetIP: benchIPA})
	if err := fb.Send(arp); err != nil {
		b.Fatal(err)
	}
	if _, err := fa.WaitRecv(); err != nil {
		b.Fatal(err)
	}

	frame, hdr := benchFrame(size, gso)
	layout := vhostusertest.LayoutSingle
	if size > 2048 {
		layout = vhostusertest.LayoutIndirect
	}
	perFrame := (virtio.NetHdrSize + size + 2047) / 2048 // receive buffers (MRG_RXBUF, 2 KiB)
	window := int64(max(1, ring/perFrame/2))
	const batch = 32

	var received atomic.Int64
	progress := make(chan struct{}, 1)
	recvDone := make(chan struct{})
	total := int64(b.N)
	go func() { // the receiving guest
		defer close(recvDone)
		for received.Load() < total {
			n, _ := fb.Drain()
			if n > 0 {
				received.Add(int64(n))
				select {
				case progress <- struct{}{}:
				default:
				}
				continue
			}
			if _, err := fb.WaitCall(0); err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sent := int64(0)
	wait := func() { // for the receiver to make progress
		timer.Reset(10 * time.Second)
		select {
		case <-progress:
		case <-timer.C:
			b.Fatalf("stalled: %d sent, %d received; receiver %v", sent, received.Load(), gpB.Stats().LogAttrs())
		}
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for sent < int64(b.N) {
		for sent-received.Load() >= window {
			wait()
		}
		n := min(int64(batch), int64(b.N)-sent, window-(sent-received.Load()))
		for i := int64(0); i < n; i++ {
			if err := fa.AddFrame(0, hdr, frame, layout); err != nil {
				b.Fatal(err)
			}
		}
		if err := fa.Flush(0); err != nil {
			b.Fatal(err)
		}
		fa.TxDone(0)
		sent += n
	}
	for received.Load() < sent {
		wait()
	}
	b.StopTimer()
	<-recvDone
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/s/1e6, "Mpps")
	b.ReportMetric(float64(b.N)*float64(size)*8/s/1e9, "Gbps")
	if d := gpA.Stats().Drops(datapath.DropSpoof) + gpB.Stats().Drops(datapath.DropNoBuffer); d != 0 {
		b.Fatalf("%d frames dropped", d)
	}
}
