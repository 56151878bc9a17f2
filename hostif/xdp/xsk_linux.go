package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// UMEM and ring geometry of one socket. Each socket has its own UMEM: half
// its frames feed the fill ring (receive), half are the TX frames.
const (
	// frameSize is a UMEM chunk: one page, the most an XDP frame can be.
	frameSize = 4096
	// xdpPacketHeadroom is XDP_PACKET_HEADROOM (include/uapi/linux/bpf.h):
	// where the kernel puts a received frame inside its chunk.
	xdpPacketHeadroom = 256
	// MaxFrameLen is the largest frame the uplink sends or receives:
	// Ethernet header and IPv4 packet (an MTU of MaxFrameLen-14).
	MaxFrameLen = frameSize - xdpPacketHeadroom
	// maxRxRing is the most entries of a socket's fill and RX rings, and
	// receive chunks: the kernel drops what arrives while they are all
	// waiting for the reader (fill_ring_empty). 1024 (4 ms of 1500-byte
	// frames at 3 Gbit/s) was not enough for a TCP sender's bursts on a
	// loaded 2-core host: 1,200-2,500 drops a 1.5 s round, the stream at
	// 0.4 Gbit/s; 4096: none, 3.9 Gbit/s (BenchmarkTCPThroughput,
	// xdp-internet-to-guest). A device with many queues gets smaller
	// rings (rxRingFor), down to minRxRing. txRingSize is that of the TX
	// and completion rings, and TX chunks. UMEM: 8 to 20 MiB per socket.
	maxRxRing  = 4096
	minRxRing  = 1024
	txRingSize = 1024
	txFrames   = txRingSize
	// rxChunkBudget bounds the receive chunks of all sockets of a device
	// (64 MiB), as long as each has at least minRxRing.
	rxChunkBudget = 16384
	// maxKicks bounds the sendto calls of one Send: copy mode transmits at
	// most 32 descriptors per call (TX_BATCH_SIZE, net/xdp/xsk.c) and asks
	// for another with EAGAIN.
	maxKicks = 16
)

// socket is one AF_XDP socket bound to one receive queue of the NIC
// (Documentation/networking/af_xdp.rst), with its own UMEM.
type socket struct {
	fd       int
	queue    int
	zeroCopy bool
	umem     []byte
	fill     *ring
	comp     *ring
	rx       *ring
	tx       *ring

	// The transmit side, guarded by txMu.
	txMu   sync.Mutex
	closed bool
	txFree []uint64 // UMEM addresses of TX frames not in flight

	// The receive side: the queue's reader goroutine only.
	rxAddrs [datapath.MaxBatch]uint64
	frames  [datapath.MaxBatch]datapath.Frame
	// gro merges each batch's runs of TCP segments of one connection
	// into GSO frames before they go on (datapath.Coalescer): the
	// kernel's GRO does it for the TAP, nothing does for AF_XDP.
	gro  datapath.Coalescer
	segs [datapath.MaxBatch][1][]byte
}

// rxRingFor returns the fill and RX ring size of each socket of a device
// with queues receive queues: a power of two from maxRxRing down, until the
// sockets' receive chunks fit rxChunkBudget, but at least minRxRing.
func rxRingFor(queues int) uint32 {
	n := uint32(maxRxRing)
	for n > minRxRing && int(n)*queues > rxChunkBudget {
		n /= 2
	}
	return n
}

// openSocket makes an AF_XDP socket for receive queue queue of ifindex,
// its UMEM and rings (fill and RX rings of rxSize entries, a power of two),
// gives the fill ring every receive frame and binds it: zero-copy if the
// driver allows, copy mode otherwise.
func openSocket(ifindex, queue int, rxSize uint32) (_ *socket, err error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EAFNOSUPPORT) {
			return nil, fmt.Errorf("AF_XDP socket: the kernel has no AF_XDP (CONFIG_XDP_SOCKETS): %w", errors.ErrUnsupported)
		}
		return nil, fmt.Errorf("AF_XDP socket: %w", err)
	}
	// s is not the named result: "return nil, err" must not clear it
	// before the deferred close releases what was made.
	s := &socket{fd: fd, queue: queue}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	numFrames := int(rxSize) + txFrames
	s.umem, err = unix.Mmap(-1, 0, numFrames*frameSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		s.umem = nil
		return nil, fmt.Errorf("UMEM of %d MiB: %w", numFrames*frameSize>>20, err)
	}
	reg := umemReg(s.umem, frameSize)
	if err := setsockoptUmemReg(fd, &reg); err != nil {
		return nil, fmt.Errorf("XDP_UMEM_REG: %w", err)
	}
	for _, o := range []struct{ opt, size int }{
		{unix.XDP_UMEM_FILL_RING, int(rxSize)}, {unix.XDP_UMEM_COMPLETION_RING, txRingSize},
		{unix.XDP_RX_RING, int(rxSize)}, {unix.XDP_TX_RING, txRingSize},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, o.opt, o.size); err != nil {
			return nil, fmt.Errorf("AF_XDP ring option %d: %w", o.opt, err)
		}
	}
	off, err := getsockoptMmapOffsets(fd)
	if err != nil {
		return nil, fmt.Errorf("XDP_MMAP_OFFSETS: %w", err)
	}
	for _, m := range []struct {
		r     **ring
		off   unix.XDPRingOffset
		pgoff int64
		size  uint32
		esz   int
	}{
		{&s.fill, off.Fr, unix.XDP_UMEM_PGOFF_FILL_RING, rxSize, addrSize},
		{&s.comp, off.Cr, unix.XDP_UMEM_PGOFF_COMPLETION_RING, txRingSize, addrSize},
		{&s.rx, off.Rx, unix.XDP_PGOFF_RX_RING, rxSize, descSize},
		{&s.tx, off.Tx, unix.XDP_PGOFF_TX_RING, txRingSize, descSize},
	} {
		if *m.r, err = mapRing(fd, m.off, m.pgoff, m.size, m.esz); err != nil {
			return nil, fmt.Errorf("mapping an AF_XDP ring: %w", err)
		}
	}
	n := s.fill.free(rxSize)
	for i := range n {
		s.fill.putAddr(i, uint64(i)*frameSize)
	}
	s.fill.submit(n)
	s.txFree = make([]uint64, 0, txFrames)
	for i := range txFrames {
		s.txFree = append(s.txFree, uint64(int(rxSize)+i)*frameSize)
	}
	for i := range s.segs {
		s.frames[i].Segs = s.segs[i][:]
	}
	sa := &unix.SockaddrXDP{Flags: unix.XDP_USE_NEED_WAKEUP | unix.XDP_ZEROCOPY, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	if zerr := unix.Bind(fd, sa); zerr == nil {
		s.zeroCopy = true
		return s, nil
	}
	sa.Flags = unix.XDP_USE_NEED_WAKEUP | unix.XDP_COPY
	if err := unix.Bind(fd, sa); err != nil {
		return nil, &bindError{queue: queue, err: err}
	}
	return s, nil
}

// bindError is a failed bind of a socket to a queue; EINVAL there means the
// NIC has no such queue (fewer active queues than allocated).
type bindError struct {
	queue int
	err   error
}

func (e *bindError) Error() string {
	return fmt.Sprintf("binding an AF_XDP socket to queue %d: %v", e.queue, e.err)
}

func (e *bindError) Unwrap() error { return e.err }

// close unmaps the rings, closes the socket and unmaps the UMEM, in that
// order (the kernel lets go of the UMEM's pages when the socket goes).
func (s *socket) close() error {
	for _, r := range []*ring{s.fill, s.comp, s.rx, s.tx} {
		r.unmap()
	}
	err := unix.Close(s.fd)
	if s.umem != nil {
		unix.Munmap(s.umem)
		s.umem = nil
	}
	return err
}

// receive takes up to MaxBatch frames from the RX ring into s.frames and
// returns how many descriptors it took and how many of them are frames (a
// descriptor outside the UMEM, or shorter than an Ethernet header, is
// dropped). Every taken frame's chunk is in s.rxAddrs until refill.
func (s *socket) receive() (taken, good int) {
	n := s.rx.avail(datapath.MaxBatch)
	for i := range n {
		addr, l := s.rx.desc(i)
		s.rxAddrs[i] = addr &^ (frameSize - 1)
		// The kernel wrote these; check them anyway before slicing: a
		// wrong one must not become an out-of-range panic.
		end := addr + uint64(l)
		if end > uint64(len(s.umem)) || end < addr || addr&^(frameSize-1) != (end-1)&^(frameSize-1) ||
			l < header.EthernetMinSize {
			continue
		}
		f := &s.frames[good]
		f.Segs[0] = s.umem[addr:end:end]
		f.Len = int(l)
		f.Queue = uint16(s.queue)
		good++
	}
	s.rx.release(n)
	return int(n), good
}

// refill gives the chunks of the n frames last received back to the fill
// ring (it always has room: the socket has as many receive chunks as fill
// entries) and wakes the driver if it asked.
func (s *socket) refill(n int) {
	k := s.fill.free(uint32(n))
	for i := range k {
		s.fill.putAddr(i, s.rxAddrs[i])
	}
	s.fill.submit(k)
	for i := range n {
		s.segs[i][0] = nil
	}
	if s.fill.needWakeup() {
		unix.Recvfrom(s.fd, nil, unix.MSG_DONTWAIT)
	}
}

// reclaim moves completed TX chunks back to the free list. txMu is held.
func (s *socket) reclaim() {
	n := s.comp.avail(txRingSize)
	for i := range n {
		a := s.comp.addr(i) &^ (frameSize - 1)
		if a >= uint64(len(s.umem)) || len(s.txFree) == cap(s.txFree) {
			continue // never ours: ignore rather than free twice
		}
		s.txFree = append(s.txFree, a)
	}
	s.comp.release(n)
}

// txCounts are what one send did with its frames.
type txCounts struct {
	sent, bytes, noBuf, bad uint64
}

// send copies frames into TX chunks (completing partial checksums), puts
// them on the TX ring and wakes the kernel once. GSO frames must have been
// segmented before (the router's offloads do not include TSO).
func (s *socket) send(frames []datapath.Frame) (c txCounts) {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	if s.closed {
		c.noBuf = uint64(len(frames))
		return c
	}
	s.reclaim()
	room := s.tx.free(uint32(len(frames)))
	k := uint32(0)
	for i := range frames {
		f := &frames[i]
		if f.Len > MaxFrameLen || f.Len < header.EthernetMinSize || f.Hdr.GSOType != virtio.NetHdrGSONone {
			c.bad++
			continue
		}
		if k == room || len(s.txFree) == 0 {
			c.noBuf++
			continue
		}
		addr := s.txFree[len(s.txFree)-1]
		b := s.umem[addr : addr+frameSize]
		n := copyFrame(b, f.Segs)
		if f.Hdr.Flags&virtio.NetHdrFNeedsCsum != 0 && !completeCsum(b[:n], int(f.Hdr.CsumStart), int(f.Hdr.CsumOffset)) {
			c.bad++
			continue
		}
		s.txFree = s.txFree[:len(s.txFree)-1]
		s.tx.putDesc(k, addr, uint32(n))
		k++
		c.sent++
		c.bytes += uint64(n)
	}
	if k == 0 {
		return c
	}
	s.tx.submit(k)
	s.kick()
	return c
}

// kick asks the kernel to transmit what the TX ring holds. Copy mode sends
// during sendto, at most 32 frames a call (EAGAIN: call again); zero-copy
// mode only needs a wake-up when the driver set need_wakeup. txMu is held.
func (s *socket) kick() {
	if s.zeroCopy && !s.tx.needWakeup() {
		return
	}
	for range maxKicks {
		err := unix.Sendto(s.fd, nil, unix.MSG_DONTWAIT, nil)
		switch err {
		case unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
			// EAGAIN: more to send, or the completion ring is full;
			// EBUSY: the device dropped one (counted by the kernel).
			s.reclaim()
			continue
		case unix.EINTR:
			continue
		}
		return
	}
}

// copyFrame copies the scatter list segs into dst and returns the bytes
// copied (at most len(dst)).
func copyFrame(dst []byte, segs [][]byte) int {
	n := 0
	for _, seg := range segs {
		n += copy(dst[n:], seg)
	}
	return n
}

// completeCsum completes the partial checksum of frame b (virtio 1.2
// §5.1.6.2: VIRTIO_NET_HDR_F_NEEDS_CSUM, the one's complement sum from
// start to the end of the frame, seeded with the pseudo-header sum already
// in the field at start+off, goes into that field; RFC 1071). It reports
// false if the range is not inside the frame.
func completeCsum(b []byte, start, off int) bool {
	if start+off+2 > len(b) {
		return false
	}
	c := ^header.Checksum(b[start:], 0)
	if off == 6 && c == 0 {
		c = 0xffff // a UDP checksum that computes to zero is sent as all ones (RFC 768)
	}
	binary.BigEndian.PutUint16(b[start+off:], c)
	return true
}

// stats returns the kernel's drop counters of the socket.
func (s *socket) stats() (unix.XDPStatistics, error) { return getsockoptStatistics(s.fd) }
