package load

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/test/backend"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// BenchmarkGuestToGuestGSO measures guest-to-guest bulk through the switch
// of a vhost-arcnet process (issue 14): two Go frontends (in the test
// process, so the backend's work is its own process's) leased by DHCP, A
// transmits 64 KiB TCP GSO frames (gso_size 1448, partial checksum) to B,
// which drains them from a second goroutine; at most half of B's receive
// ring is in flight (BULK_RING=N sets the ring size, default 1024).
// Reported: Gbps of frame bytes delivered, backend-cpu-Gbps (per second of
// the backend process's CPU time) and backend-cores (its CPU time over the
// wall time).
// ARCNET_CPUPROFILE=FILE makes the backend write its CPU profile there
// (--cpuprofile; the last run of the benchmark wins), -cpuprofile profiles
// the frontends:
//
//	ARCNET_CPUPROFILE=/tmp/backend.pprof go test -run '^$' -bench GuestToGuestGSO \
//	    -benchtime 20000x -cpuprofile /tmp/frontends.pprof ./test/load/
func BenchmarkGuestToGuestGSO(b *testing.B) {
	ring := uint16(1024)
	if s := os.Getenv("BULK_RING"); s != "" {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			b.Fatalf("BULK_RING: %v", err)
		}
		ring = uint16(n)
	}
	dir := backend.WorkDir(b, "arcnet-bulk-", "LOAD_KEEP")
	sock := filepath.Join(dir, "vm.sock")
	addr := freeLoopback(b)
	args := []string{"--socket", sock, "--uplink", "none", "--dns-upstream", "127.0.0.1:9", "--lease-file", "none",
		"--metrics", addr}
	if f := os.Getenv("ARCNET_CPUPROFILE"); f != "" {
		args = append(args, "--cpuprofile", f)
	}
	p := backend.Start(b, backend.Config{Name: "vhost-arcnet", Args: args})
	be := &arcnet{Process: p, t: b, sock: sock, metrics: "http://" + addr + "/metrics",
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	guests := make([]*guest, 2)
	for i := range guests {
		guests[i] = &guest{
			// Both rings and their buffer slots in one region, rounded to 2 MiB.
			f: vhostusertest.New(b, vhostusertest.Options{Timeout: 30 * time.Second, Regions: 1,
				RegionSize: (2*uint64(ring)*8448 + 4<<20) &^ (2<<20 - 1)}),
			mac: guestMAC(0x40, i),
		}
		if err := guests[i].attach(be.sock, ring); err != nil {
			b.Fatal(err)
		}
	}
	for _, g := range guests {
		if err := g.quiesce(2 * time.Second); err != nil {
			b.Fatal(err)
		}
	}
	a, dst := guests[0], guests[1]

	const size = 65536
	frame := make([]byte, size)
	header.Ethernet(frame).Encode(&header.EthernetFields{Dst: dst.mac, Src: a.mac, EtherType: header.EtherTypeIPv4})
	ip := header.IPv4(frame[14:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(size - 14), TTL: 64, Protocol: header.ProtoTCP, Src: a.ip, Dst: dst.ip})
	header.TCP(frame[34:]).Encode(&header.TCPFields{SrcPort: 40000, DstPort: 5201, Flags: header.TCPFlagACK, Window: 100})
	header.TCP(frame[34:]).SetChecksum(ip.PseudoHeaderChecksum(header.ProtoTCP, 0))
	hdr := virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 1448,
		HdrLen: 54, CsumStart: 34, CsumOffset: 16}
	perFrame := (virtio.NetHdrSize + size + 2047) / 2048 // receive buffers (MRG_RXBUF, 2 KiB)
	window := int64(max(1, int(ring)/perFrame/2))

	var received atomic.Int64
	progress := make(chan struct{}, 1)
	recvDone := make(chan struct{})
	total := int64(b.N)
	go func() { // the receiving guest
		defer close(recvDone)
		for received.Load() < total {
			if n, _ := dst.f.Drain(); n > 0 {
				received.Add(int64(n))
				select {
				case progress <- struct{}{}:
				default:
				}
				continue
			}
			if _, err := dst.f.WaitCall(0); err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sent := int64(0)
	wait := func() {
		timer.Reset(10 * time.Second)
		select {
		case <-progress:
		case <-timer.C:
			b.Fatalf("stalled: %d sent, %d received", sent, received.Load())
		}
	}
	b.SetBytes(size)
	b.ResetTimer()
	ticks0 := be.cpuTicks()
	for sent < total {
		for sent-received.Load() >= window {
			wait()
		}
		n := min(32, total-sent, window-(sent-received.Load()))
		for range n {
			if err := a.f.AddFrame(0, hdr, frame, vhostusertest.LayoutIndirect); err != nil {
				b.Fatal(err)
			}
		}
		if err := a.f.Flush(0); err != nil {
			b.Fatal(err)
		}
		a.f.TxDone(0)
		sent += n
	}
	for received.Load() < sent {
		wait()
	}
	b.StopTimer()
	ticks := be.cpuTicks() - ticks0
	<-recvDone
	bits := float64(b.N) * size * 8
	b.ReportMetric(bits/b.Elapsed().Seconds()/1e9, "Gbps")
	if ticks > 0 {
		// Per second of the backend's CPU time (/proc/PID/stat, 1/100 s
		// ticks): what one backend core would carry if it had the core to
		// itself, robust against other processes taking the CPU.
		b.ReportMetric(bits/(float64(ticks)/100)/1e9, "backend-cpu-Gbps")
		b.ReportMetric(float64(ticks)/100/b.Elapsed().Seconds(), "backend-cores")
	}
}
