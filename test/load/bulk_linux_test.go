package load

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/test/backend"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// BenchmarkGuestToGuestGSO measures guest-to-guest bulk through the switch
// of a vhost-arcnet process (issue 14): two Go frontends (in the test
// process, so the backend's work is its own process's) leased by DHCP, A
// transmits 64 KiB TCP GSO frames (gso_size 1448, partial checksum) to B,
// which drains them from a second goroutine; at most B's receive ring less
// 64 buffers is in flight (56 frames of 17 buffers in a ring of 1024).
//
// The frontends behave as Linux guests do: B posts 4 KiB mergeable receive
// buffers (Linux sizes them by the average packet, up to a page) without
// zeroing them, and drains with used-buffer notifications off while it
// polls (NAPI); A reclaims transmitted buffers when it adds more, with
// transmit notifications off (virtio_net without napi_tx). Two cases:
//   - tx=copy: A copies every frame into its transmit buffers (a guest's
//     stack copying from user space);
//   - tx=prewritten: A transmits 16 frames written once into its memory,
//     again and again (sendfile, MSG_ZEROCOPY): the sender costs next to
//     nothing, the figure is the backend's.
//
// BULK_RING=N sets the ring size (default 1024), BULK_SLOT=N the buffer
// size (default 4096; the frame is in pieces of that size too),
// BULK_BATCH=N how many frames A adds before it publishes them (default
// 32), BULK_WINDOW=N the frames in flight, BULK_NOTIFY=always makes both
// drivers ask for every used-buffer notification (A's transmit interrupts
// on, B drains without turning its off: what this benchmark did before,
// to count what suppression saves), BULK_PACKED=1 runs the backend with
// --packed-rings (the frontends take packed rings when offered),
// BULK_TSQ=N makes A a Linux sender with TX completion interrupts
// (virtio_net napi_tx) under TCP Small Queues: at most N frames it added
// and the backend has not returned (used) yet, and it sleeps on its
// transmit call when it has that many (16 frames of 64 KiB is
// tcp_limit_output_bytes before Linux 6.16, 1 MiB; 64 after; split rings).
// Reported: Gbps of frame bytes delivered, backend-cpu-Gbps (per second of
// the backend process's CPU time), backend-cores and frontend-cores (the
// backend's and the test process's CPU time over the wall time: together
// well under the machine's 2 cores means the run waited on wake-ups, not
// on the CPU), total-cpu-Gbps (per second of both processes' CPU time),
// and per frame the kicks A sent (tx-kicks/frame), the calls
// the backend made to B (rx-calls/frame) and to A (tx-calls/frame), the
// kicks B sent when it posted buffers (rx-kicks/frame).
// ARCNET_CPUPROFILE=FILE makes the backend write its CPU profile there
// (--cpuprofile; the last run of the benchmark wins), -cpuprofile profiles
// the frontends; ARCNET_BIN=PATH runs that vhost-arcnet binary:
//
//	ARCNET_CPUPROFILE=/tmp/backend.pprof go test -run '^$' -bench GuestToGuestGSO \
//	    -benchtime 40000x -cpuprofile /tmp/frontends.pprof ./test/load/
func BenchmarkGuestToGuestGSO(b *testing.B) {
	b.Run("tx=copy", func(b *testing.B) { benchBulk(b, false) })
	b.Run("tx=prewritten", func(b *testing.B) { benchBulk(b, true) })
}

// bulkEnv reads a uint16 knob of BenchmarkGuestToGuestGSO.
func bulkEnv(b *testing.B, name string, def uint16) uint16 {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		b.Fatalf("%s=%q: want 1..65535", name, s)
	}
	return uint16(n)
}

func benchBulk(b *testing.B, prewritten bool) {
	ring := bulkEnv(b, "BULK_RING", 1024)
	slot := uint32(bulkEnv(b, "BULK_SLOT", 4096))
	batch := int64(bulkEnv(b, "BULK_BATCH", 32))
	tsq := int64(0)
	if os.Getenv("BULK_TSQ") != "" {
		tsq = int64(bulkEnv(b, "BULK_TSQ", 0))
		if os.Getenv("BULK_PACKED") == "1" {
			b.Fatal("BULK_TSQ counts split rings' entries: not with BULK_PACKED")
		}
	}
	napi := true
	switch v := os.Getenv("BULK_NOTIFY"); v {
	case "", "napi":
	case "always":
		napi = false
	default:
		b.Fatalf("BULK_NOTIFY=%q: want napi or always", v)
	}
	dir := backend.WorkDir(b, "arcnet-bulk-", "LOAD_KEEP")
	sock := filepath.Join(dir, "vm.sock")
	addr := freeLoopback(b)
	args := []string{"--socket", sock, "--uplink", "none", "--dns-upstream", "127.0.0.1:9", "--lease-file", "none",
		"--metrics", addr}
	if f := os.Getenv("ARCNET_CPUPROFILE"); f != "" {
		args = append(args, "--cpuprofile", f)
	}
	if os.Getenv("BULK_PACKED") == "1" {
		args = append(args, "--packed-rings")
	}
	p := backend.Start(b, backend.Config{Name: "vhost-arcnet", Args: args})
	be := &arcnet{Process: p, t: b, sock: sock, metrics: "http://" + addr + "/metrics",
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	const txFrames = 16 // tx=prewritten: distinct frames in A's memory
	const size = 65536
	guests := make([]*guest, 2)
	for i := range guests {
		guests[i] = &guest{
			// Both rings and their buffer slots (four per entry, as
			// vhostusertest lays them out) in one region, with room for
			// the prewritten frames, rounded to 2 MiB.
			f: vhostusertest.New(b, vhostusertest.Options{Timeout: 30 * time.Second, Regions: 1, SlotSize: slot,
				KeepRxBuffers: true,
				RegionSize:    (2*uint64(ring)*(4*uint64(slot)+32) + txFrames*(size+64) + 4<<20) &^ (2<<20 - 1)}),
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

	frame := make([]byte, size)
	header.Ethernet(frame).Encode(&header.EthernetFields{Dst: dst.mac, Src: a.mac, EtherType: header.EtherTypeIPv4})
	ip := header.IPv4(frame[14:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(size - 14), TTL: 64, Protocol: header.ProtoTCP, Src: a.ip, Dst: dst.ip})
	header.TCP(frame[34:]).Encode(&header.TCPFields{SrcPort: 40000, DstPort: 5201, Flags: header.TCPFlagACK, Window: 100})
	header.TCP(frame[34:]).SetChecksum(ip.PseudoHeaderChecksum(header.ProtoTCP, 0))
	hdr := virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 1448,
		HdrLen: 54, CsumStart: 34, CsumOffset: 16}
	var pre []*vhostusertest.TxFrame
	if prewritten {
		for range txFrames {
			tf, err := a.f.WriteTxFrame(0, hdr, frame)
			if err != nil {
				b.Fatal(err)
			}
			pre = append(pre, tf)
		}
	}
	perFrame := (virtio.NetHdrSize + size + int(slot) - 1) / int(slot) // receive buffers (MRG_RXBUF)
	// Frames in flight: as many as B's ring holds, less 64 buffers. B
	// reposts buffers once 32 are free and counts frames after it
	// reposted, so when A sees a frame counted fewer than 32 buffers are
	// not back in the ring. A frame dropped for want of a buffer would
	// stall the run (and fail it).
	window := int64(max(1, (int(ring)-64)/perFrame))
	if os.Getenv("BULK_WINDOW") != "" {
		window = int64(bulkEnv(b, "BULK_WINDOW", 0))
	}

	// A reclaims its transmit buffers as it adds frames: it needs no
	// used-buffer notifications (virtio 1.2 §2.7.10).
	txd := a.f.Ring(1).Driver
	if napi && tsq == 0 {
		txd.DisableInterrupts()
	}
	// TSQ: the frames A added that the backend has not used yet (one
	// indirect chain a frame), reclaimed first.
	txQueued := func() int64 {
		a.f.TxDone(0)
		return int64(txd.AvailIdx() - txd.LastUsed())
	}
	rxd := dst.f.Ring(0).Driver
	txKicks0, txCalls0 := a.f.Kicks(1), a.f.Calls(1)
	rxKicks0, rxCalls0 := dst.f.Kicks(0), dst.f.Calls(0)

	var received atomic.Int64
	progress := make(chan struct{}, 1)
	recvDone := make(chan struct{})
	total := int64(b.N)
	go func() { // the receiving guest
		defer close(recvDone)
		for received.Load() < total {
			// NAPI: notifications off while it polls; on again, and
			// one more look, before it sleeps (virtio 1.2 §2.7.10).
			if napi {
				rxd.DisableInterrupts()
			}
			if n, _ := dst.f.Drain(); n > 0 {
				received.Add(int64(n))
				select {
				case progress <- struct{}{}:
				default:
				}
				continue
			}
			if rxd.EnableInterrupts() {
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
	self0 := selfCPU(b)
	for sent < total {
		for sent-received.Load() >= window {
			wait()
		}
		for tsq > 0 && txQueued() >= tsq {
			// Sleep on the transmit call unless more came back
			// meanwhile (EnableInterrupts looks again).
			if !txd.EnableInterrupts() {
				if _, err := a.f.WaitCall(1); err != nil {
					b.Fatal(err)
				}
			}
		}
		n := min(batch, total-sent, window-(sent-received.Load()))
		if tsq > 0 {
			n = min(n, tsq-txQueued())
		}
		for i := range n {
			var err error
			if prewritten {
				err = a.f.AddTxFrame(pre[(sent+i)%txFrames], vhostusertest.LayoutIndirect)
			} else {
				err = a.f.AddFrame(0, hdr, frame, vhostusertest.LayoutIndirect)
			}
			if err != nil {
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
	self := selfCPU(b) - self0
	<-recvDone
	bits := float64(b.N) * size * 8
	b.ReportMetric(bits/b.Elapsed().Seconds()/1e9, "Gbps")
	if ticks > 0 {
		// Per second of the backend's CPU time (/proc/PID/stat, 1/100 s
		// ticks): what one backend core would carry if it had the core to
		// itself, robust against other processes taking the CPU.
		b.ReportMetric(bits/(float64(ticks)/100)/1e9, "backend-cpu-Gbps")
		b.ReportMetric(float64(ticks)/100/b.Elapsed().Seconds(), "backend-cores")
		b.ReportMetric(bits/(float64(ticks)/100+self.Seconds())/1e9, "total-cpu-Gbps")
	}
	b.ReportMetric(self.Seconds()/b.Elapsed().Seconds(), "frontend-cores")
	per := func(n uint64) float64 { return float64(n) / float64(b.N) }
	b.ReportMetric(per(a.f.Kicks(1)-txKicks0), "tx-kicks/frame")
	b.ReportMetric(per(a.f.Calls(1)-txCalls0), "tx-calls/frame")
	b.ReportMetric(per(dst.f.Kicks(0)-rxKicks0), "rx-kicks/frame")
	b.ReportMetric(per(dst.f.Calls(0)-rxCalls0), "rx-calls/frame")
}

// selfCPU returns the CPU time (user + system) the test process has used.
func selfCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCopy64KiB is the one-copy limit of BenchmarkGuestToGuestGSO on
// this machine: Go's copy() of 64 KiB frames, hot in cache between two
// heap buffers, and as the backend copies in that benchmark: from 16
// frames in one shared memory file (A's memory) into a ring of 1024 4 KiB
// buffers in another (B's: 4 MiB, written in ring order), in 4 KiB pieces.
//
//	go test -run '^$' -bench Copy64KiB ./test/load/
func BenchmarkCopy64KiB(b *testing.B) {
	const size, piece, frames, bufs = 65536, 4096, 16, 1024
	b.Run("heap-hot", func(b *testing.B) {
		src, dst := make([]byte, size), make([]byte, size)
		b.SetBytes(size)
		for b.Loop() {
			copy(dst, src)
		}
		reportGbps(b, size)
	})
	b.Run("memfd-ring", func(b *testing.B) {
		src, dst := sharedMem(b, frames*size), sharedMem(b, bufs*piece)
		b.SetBytes(size)
		i, next := 0, 0
		for b.Loop() {
			f := src[(i%frames)*size:][:size]
			for off := 0; off < size; off += piece {
				copy(dst[next*piece:][:piece], f[off:off+piece])
				next = (next + 1) % bufs
			}
			i++
		}
		reportGbps(b, size)
	})
}

// reportGbps adds Gbps (of size-byte frames) to b's result.
func reportGbps(b *testing.B, size int) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)*float64(size)*8/s/1e9, "Gbps")
	}
}

// sharedMem maps n bytes of a new memfd (as guest memory is) and touches
// every page.
func sharedMem(b *testing.B, n int) []byte {
	fd, err := unix.MemfdCreate("arcnet-copy", unix.MFD_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, int64(n)); err != nil {
		b.Fatal(err)
	}
	m, err := unix.Mmap(fd, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = unix.Munmap(m) })
	for i := 0; i < n; i += 4096 {
		m[i] = byte(i)
	}
	return m
}
