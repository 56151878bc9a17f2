package datapath

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// Frame sockets: guests whose launcher exchanges bare Ethernet frames over a
// socket instead of speaking vhost-user (DESIGN.md "Data flow").
//
//   - Stream (StreamListener): each frame preceded by its length as a
//     32-bit big-endian integer, on a unix or TCP stream socket. This is
//     QEMU's -netdev stream and its legacy -netdev socket (net/stream.c,
//     net/socket.c: a 4-byte network-order length before each packet) and
//     libkrun's unixstream backend (krunkit type=unixstream, passt).
//   - Datagram (DgramListener): one frame per datagram on a unix datagram
//     socket: QEMU's -netdev dgram (net/dgram.c), vfkit and libkrun's
//     unixgram backend (krunkit type=unixgram), which may first send the
//     4-byte hello "VFKT" (libkrun NET_FLAG_VFKIT, as gvproxy's vfkit mode
//     expects). Several peers share one socket, told apart by their
//     address.
//
// Each peer is one FramePort: a Port on the switch like a vhost-user guest,
// with the same anti-spoofing, services, NAT and counters. Frames it sends
// go into the switch (through its peer, SetPeer) with offload metadata
// recognised as in framesock_offload.go; frames the switch sends it are
// copied into the port's transmit queue and written to the socket by the
// port's writer goroutine, batched (one write or sendmmsg for everything
// queued). A port takes no offloads (RxOffloads is empty): the switch
// segments GSO frames for it and the port completes partial checksums in
// its copy, since neither QEMU's socket netdevs nor libkrun (which hands
// the guest a zeroed virtio-net header) carry offload metadata.
//
// # Trust
//
// A peer is as untrusted as a guest. Every length it sends is checked
// before use: a stream length of 0 or above maxFrameLen closes that peer's
// connection with one log line, as does a connection that ends in the
// middle of a frame; other peers are not touched. Frame bytes are read into
// backend buffers, so the switch's copy-and-check is of memory no peer can
// change any more.
//
// # Concurrency
//
// A port's frames from the socket come from one reader goroutine (per
// connection for stream, per socket for datagrams). Send may be called from
// many goroutines; it copies under the transmit queue's mutex, once per
// batch, and never waits for the socket: a full queue drops
// (drop_no_buffer), so a slow peer cannot stall the guest that sends to it.

// frameSockQueueBytes is how many bytes of frames a port queues for its
// writer: enough for a full batch of 64 KiB frames, and for a burst of small
// ones to go out in one system call.
const frameSockQueueBytes = 4 << 20

// frameSockQueueFrames bounds the frames queued on a datagram port (one
// datagram each).
const frameSockQueueFrames = 4096

// DefaultFrameSockMTU is the MTU of a frame-socket port unless set: larger
// IP packets from the peer are super-frames (framesock_offload.go).
const DefaultFrameSockMTU = 1500

// streamLenSize is the length prefix of a stream frame.
const streamLenSize = 4

// frameWriter writes a batch of queued frames to the peer. buf holds the
// frames back to back (each with its length prefix for a stream), ends the
// offset just past each one. An error ends the port.
type frameWriter interface {
	writeFrames(buf []byte, ends []int) error
}

// FramePort is one frame-socket peer's port; see the comment at the top of
// framesock.go.
type FramePort struct {
	name   string
	log    *slog.Logger
	stats  Stats
	peer   atomic.Pointer[Port]
	mtu    int
	stream bool // frames carry a length prefix
	w      frameWriter

	mu      sync.Mutex // guards pend, ends, closed
	pend    []byte
	ends    []int
	closed  bool
	wake    chan struct{}
	done    chan struct{} // closed when the writer has ended
	ended   chan struct{} // closed when onEnd has returned
	endOnce sync.Once
	endErr  error
	onEnd   func(*FramePort, error)
}

// newFramePort returns a port writing through w and starts its writer.
// onEnd runs once, on the writer's goroutine, when the port ends.
func newFramePort(name string, log *slog.Logger, mtu int, stream bool, w frameWriter, onEnd func(*FramePort, error)) *FramePort {
	if mtu <= 0 {
		mtu = DefaultFrameSockMTU
	}
	p := &FramePort{
		name: name, log: log.With("port", name), mtu: mtu, stream: stream, w: w,
		pend: make([]byte, 0, frameSockQueueBytes), ends: make([]int, 0, frameSockQueueFrames),
		wake: make(chan struct{}, 1), done: make(chan struct{}), ended: make(chan struct{}), onEnd: onEnd,
	}
	go p.writer()
	return p
}

// Name returns the port's name.
func (p *FramePort) Name() string { return p.name }

// Stats returns the port's counters: rx what the peer sent, tx what was
// queued for it.
func (p *FramePort) Stats() *Stats { return &p.stats }

// SetPeer sets where the peer's frames go (the switch sets itself); nil
// drops them.
func (p *FramePort) SetPeer(peer Port) {
	if peer == nil {
		p.peer.Store(nil)
		return
	}
	p.peer.Store(&peer)
}

// RxOffloads reports that the port takes no offloads: the switch segments
// GSO frames for it (and Send completes partial checksums).
func (p *FramePort) RxOffloads() RxOffloads { return RxOffloads{} }

// Send queues frames for the peer. Frames that do not fit the queue are
// dropped (drop_no_buffer); a GSO frame (the switch segments them for this
// port, so none should come) or a partial checksum outside its frame is
// dropped as malformed.
func (p *FramePort) Send(frames []Frame) {
	n, bytes, bad, full := p.enqueue(frames)
	p.stats.TxPackets.Add(uint64(n))
	p.stats.TxBytes.Add(uint64(bytes))
	p.stats.Drop(DropMalformed, uint64(bad))
	p.stats.Drop(DropNoBuffer, uint64(full))
	if n > 0 {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

func (p *FramePort) enqueue(frames []Frame) (n, bytes, bad, full int) {
	// Unlocked in a defer: the frames may be in a guest's memory, and a
	// fault while copying (virtio/fault.go) unwinds through here to the
	// sender's worker. A frame is added to the queue only once copied.
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, 0, 0, len(frames)
	}
	pre := 0
	if p.stream {
		pre = streamLenSize
	}
	for i := range frames {
		f := &frames[i]
		off, need := len(p.pend), pre+f.Len
		if f.Hdr.GSOType != virtio.NetHdrGSONone || f.Len < minFrameLen || f.Len > maxFrameLen {
			bad++
			continue
		}
		if off+need > cap(p.pend) || len(p.ends) == cap(p.ends) {
			full++
			continue
		}
		buf := p.pend[off : off+need]
		if pre > 0 {
			binary.BigEndian.PutUint32(buf, uint32(f.Len))
		}
		if copyFrame(buf[pre:], f.Segs) != f.Len || !CompleteChecksum(buf[pre:], &f.Hdr) {
			bad++
			continue
		}
		p.pend = p.pend[:off+need]
		p.ends = append(p.ends, off+need)
		n++
		bytes += f.Len
	}
	return n, bytes, bad, full
}

// writer writes what Send queued until the port closes or a write fails.
func (p *FramePort) writer() {
	defer close(p.done)
	buf := make([]byte, 0, frameSockQueueBytes)
	ends := make([]int, 0, frameSockQueueFrames)
	for range p.wake {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		buf, p.pend = p.pend, buf[:0]
		ends, p.ends = p.ends, ends[:0]
		p.mu.Unlock()
		if len(ends) == 0 {
			continue
		}
		if err := p.w.writeFrames(buf, ends); err != nil {
			p.end(err)
			return
		}
	}
}

// input hands frames the peer sent (in backend buffers the caller owns) to
// the port's peer, with their offload metadata recognised.
func (p *FramePort) input(frames []Frame) {
	nf, bytes, big := 0, 0, 0
	for i := range frames {
		f := &frames[i]
		f.Hdr = virtio.NetHdr{}
		if len(f.Segs) == 1 && inboundOffload(f.Segs[0], p.mtu, &f.Hdr) == offloadDrop {
			big++
			continue
		}
		bytes += f.Len
		if nf != i {
			frames[nf] = *f
		}
		nf++
	}
	p.stats.RxPackets.Add(uint64(nf))
	p.stats.RxBytes.Add(uint64(bytes))
	p.stats.Drop(DropTooBig, uint64(big))
	if nf == 0 {
		return
	}
	if peer := p.peer.Load(); peer != nil {
		(*peer).Send(frames[:nf])
	} else {
		p.stats.Drop(DropNoRoute, uint64(nf))
	}
}

// errPortClosed ends a port closed by its listener.
var errPortClosed = errors.New("frame socket closed")

// end ends the port with err (once): queued frames are dropped, the writer
// stops, and onEnd runs.
func (p *FramePort) end(err error) {
	p.endOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.pend, p.ends = p.pend[:0], p.ends[:0]
		p.endErr = err
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
		// onEnd runs on a goroutine of its own: end may be called from
		// the writer, a reader, or a listener's Close.
		go func() {
			defer close(p.ended)
			if p.onEnd != nil {
				p.onEnd(p, err)
			}
		}()
	})
}

// Close ends the port and waits for its writer and its onEnd.
func (p *FramePort) Close() {
	p.end(errPortClosed)
	<-p.done
	<-p.ended
}

// Err returns why the port ended, nil while it runs.
func (p *FramePort) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.endErr
}
