//go:build linux

package datapath_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Multi-queue end to end (issue 14): 64-byte UDP frames of many flows from
// in-process Go vhost-user frontends with 1 or 2 queue pairs, one
// goroutine per queue pair and direction in the frontends, one transmit
// worker per queue pair in the backend:
//
//   - switch: guest A sends to guest B through the Switch. Flow f goes on
//     A's pair f%pairs; B transmitted one frame of every flow on pair
//     f%pairs first, so B's port steers the flow to B's receiveq f%pairs
//     (virtio 1.2 §5.1.6.5.6, datapath/steer.go): per pair, A's transmit
//     worker copies into B's receive queue of the same pair, as with two
//     guests whose flows are each handled on one vCPU at both ends.
//   - loopback: guest A's frames come back to A (datapath.Loopback, as
//     --uplink loopback); the port steers each flow back to the pair that
//     transmitted it.
//
// Reported: aggregate Mpps over all pairs, Mpps per CPU-second of the
// whole process (frontends and backend share it), the CPUs the process got,
// and the notifications per 1000 frames (kicks of the sender's transmit
// queues, calls of the receiver's receive queues): with more goroutines
// than cores, rings run empty more often and every wake-up costs a
// notification and a goroutine switch. Compare pairs=1 and pairs=2 of one
// run:
//
//	go test -run '^$' -bench MultiQueue -benchtime 2000000x -count 5 ./datapath/
func BenchmarkMultiQueue(b *testing.B) {
	for _, path := range []string{"switch", "loopback"} {
		for _, pairs := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/pairs=%d", path, pairs), func(b *testing.B) { benchMultiQueue(b, path, pairs) })
		}
	}
}

// mqFlows is the number of flows (UDP source ports) the sender cycles
// through.
const mqFlows = 256

// mqServer serves vhost-user with pairs queue pairs; each connection is a
// GuestPort attached to sw, or (sw nil) looped back to itself. start dials
// a frontend and sets up its queue pairs.
func mqServer(b *testing.B, sw *datapath.Switch, pairs int) (start func() *vhostusertest.Frontend, ports chan *datapath.GuestPort) {
	log := slog.New(slog.DiscardHandler)
	ports = make(chan *datapath.GuestPort, 2)
	srv, err := vhostuser.NewServer(vhostuser.Options{
		Logger:     log,
		QueuePairs: pairs,
		NewDevice: func(info vhostuser.SessionInfo) (vhostuser.Device, error) {
			gp, err := datapath.NewGuestPort(datapath.GuestPortOptions{Name: fmt.Sprint("guest", info.ID-1), QueuePairs: pairs, Logger: log})
			if err != nil {
				return nil, err
			}
			if sw == nil {
				gp.SetPeer(datapath.NewLoopback("loop", gp))
			} else if _, err := sw.Attach(gp, datapath.PortOptions{}); err != nil {
				return nil, err
			}
			ports <- gp
			return gp, nil
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "s")
	if err := srv.Listen(path); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	start = func() *vhostusertest.Frontend {
		f := vhostusertest.New(b, vhostusertest.Options{QueuePairs: pairs, RegionSize: 32 << 20, Timeout: 30 * time.Second, KeepRxBuffers: true})
		if err := f.Dial(path); err != nil {
			b.Fatal(err)
		}
		if err := f.Negotiate(0); err != nil {
			b.Fatal(err)
		}
		if pairs > 1 && f.Features()&virtio.NetFMQ == 0 {
			b.Fatal("VIRTIO_NET_F_MQ not negotiated")
		}
		if err := f.SetupQueues(pairs, benchRing); err != nil {
			b.Fatal(err)
		}
		return f
	}
	return start, ports
}

// mqFrame is flow fl's 64-byte UDP frame from benchMACA/benchIPA to
// benchMACB/benchIPB; reverse makes it the other direction's.
func mqFrame(fl int, reverse bool) []byte {
	frame, _ := benchFrame(64, false)
	sport := uint16(10000 + fl)
	if reverse {
		ip := header.IPv4(frame[14:])
		ip.Encode(&header.IPv4Fields{TotalLength: 50, TTL: 64, Protocol: header.ProtoUDP, Src: benchIPB, Dst: benchIPA})
		header.Ethernet(frame).Encode(&header.EthernetFields{Dst: benchMACA, Src: benchMACB, EtherType: header.EtherTypeIPv4})
		binary.BigEndian.PutUint16(frame[34:], 2)
		binary.BigEndian.PutUint16(frame[36:], sport)
		return frame
	}
	binary.BigEndian.PutUint16(frame[34:], sport)
	return frame
}

func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchMultiQueue(b *testing.B, path string, pairs int) {
	log := slog.New(slog.DiscardHandler)
	var sw *datapath.Switch
	if path == "switch" {
		var err error
		if sw, err = datapath.NewSwitch(datapath.SwitchOptions{Leases: benchLeases{}, Logger: log}); err != nil {
			b.Fatal(err)
		}
	}
	start, ports := mqServer(b, sw, pairs)
	fa := start()
	gpA := <-ports
	fb, gpB := fa, gpA // the receiving guest
	if sw != nil {
		fb = start()
		gpB = <-ports
		// B transmits every flow once on the pair it will receive it on.
		for fl := 0; fl < mqFlows; fl++ {
			if err := fb.AddFrame(fl%pairs, virtio.NetHdr{}, mqFrame(fl, true), vhostusertest.LayoutSingle); err != nil {
				b.Fatal(err)
			}
		}
		for qp := 0; qp < pairs; qp++ {
			if err := fb.Flush(qp); err != nil {
				b.Fatal(err)
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for got := 0; got < mqFlows; {
			n, _ := fa.Drain()
			got += n
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d of B's frames reached A", got, mqFlows)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	frames := make([][]byte, mqFlows)
	for fl := range frames {
		frames[fl] = mqFrame(fl, false)
	}

	notes := func() (n int64) { // kicks of A's transmitqs, calls of B's receiveqs
		for qp := 0; qp < pairs; qp++ {
			n += int64(fa.Kicks(2*qp+1) + fb.Calls(2*qp))
		}
		return n
	}
	notes0 := notes()
	b.SetBytes(64)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	// At most benchRing/2 frames in flight over all pairs: a flow that
	// shares a steering bucket with more than steerWays others may land on
	// another pair's receive queue, which must still have room.
	err := vhostusertest.Pump(fa, fb, vhostusertest.PumpOptions{Pairs: pairs, Frames: int64(b.N), Flows: frames, Window: benchRing / 2})
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	if err != nil {
		b.Fatal(err)
	}
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(notes()-notes0)*1000/float64(b.N), "kicks+calls/kframe")
	b.ReportMetric(float64(b.N)/s/1e6, "Mpps")
	b.ReportMetric(float64(b.N)/cpu.Seconds()/1e6, "Mpps/CPU-s")
	b.ReportMetric(cpu.Seconds()/s, "CPUs")
	for _, gp := range []*datapath.GuestPort{gpA, gpB} {
		st := gp.Stats()
		if d := st.Drops(datapath.DropSpoof) + st.Drops(datapath.DropNoBuffer) + st.Drops(datapath.DropNoQueue); d != 0 {
			b.Fatalf("%s: %d frames dropped: %v", gp.Name(), d, st.LogAttrs())
		}
	}
}
