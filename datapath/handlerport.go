package datapath

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// FrameHandler consumes whole Ethernet frames and answers with frames of
// its own: the gateway's services (services.Gateway implements it).
type FrameHandler interface {
	// HandleFrame processes one frame, a private copy that does not change
	// during the call. Answers go to reply, during the call or later from
	// another goroutine; the frame passed to reply is only read during
	// that call.
	HandleFrame(frame []byte, reply func(frame []byte))
}

// HandlerPort attaches a FrameHandler to the switch: frames sent to the
// port are copied whole into backend memory (the handler parses them at
// leisure without the sender being able to change them, ARCHITECTURE.md
// "Rules that hold everywhere"), with any partial checksum completed, and handed to the handler
// one by one; its replies enter the switch through the port's peer.
//
// It takes no offloads (RxOffloads is empty), so the switch segments GSO
// frames for it. Send and the reply function are safe for concurrent use.
type HandlerPort struct {
	name    string
	h       FrameHandler
	stats   Stats
	peer    atomic.Pointer[Port]
	replyFn func([]byte)
	bufs    sync.Pool // *[]byte of maxFrameLen
	replies sync.Pool // *replyBatch
}

type replyBatch struct {
	frames [1]Frame
	segs   [1][]byte
}

// NewHandlerPort returns a port named name that hands its frames to h.
func NewHandlerPort(name string, h FrameHandler) *HandlerPort {
	p := &HandlerPort{name: name, h: h}
	p.replyFn = p.reply
	p.bufs.New = func() any { b := make([]byte, maxFrameLen); return &b }
	p.replies.New = func() any { return new(replyBatch) }
	return p
}

// Name returns the port's name.
func (p *HandlerPort) Name() string { return p.name }

// Stats returns the port's counters: tx are frames handed to the handler,
// rx its replies.
func (p *HandlerPort) Stats() *Stats { return &p.stats }

// SetPeer sets where the handler's replies go (the switch sets itself);
// nil drops them.
func (p *HandlerPort) SetPeer(peer Port) {
	if peer == nil {
		p.peer.Store(nil)
		return
	}
	p.peer.Store(&peer)
}

// RxOffloads reports that the port takes no offloads: GSO frames are
// segmented for it by the switch.
func (p *HandlerPort) RxOffloads() RxOffloads { return RxOffloads{} }

// Send copies each frame and hands it to the handler.
func (p *HandlerPort) Send(frames []Frame) {
	bp := p.bufs.Get().(*[]byte)
	buf := *bp
	n, bytes, bad := 0, 0, 0
	for i := range frames {
		f := &frames[i]
		k := copyFrame(buf, f.Segs)
		if k < minFrameLen || f.Hdr.GSOType != virtio.NetHdrGSONone || !CompleteChecksum(buf[:k], &f.Hdr) {
			bad++
			continue
		}
		n++
		bytes += k
		p.h.HandleFrame(buf[:k], p.replyFn)
	}
	p.bufs.Put(bp)
	p.stats.TxPackets.Add(uint64(n))
	p.stats.TxBytes.Add(uint64(bytes))
	p.stats.Drop(DropMalformed, uint64(bad))
}

// CompleteChecksum fills in the partial checksum of frame (virtio 1.2
// §5.1.6.2: the field at csum_start+csum_offset holds the pseudo-header
// sum, the checksum covers csum_start to the end). It reports false if the
// field lies outside the frame. The switch completes checksums only when it
// segments; a port that takes no checksum offload (a handler, a frame
// socket, an uplink without it) completes them on its own copy with this.
func CompleteChecksum(frame []byte, h *virtio.NetHdr) bool {
	if h.Flags&virtio.NetHdrFNeedsCsum == 0 {
		return true
	}
	start, end := int(h.CsumStart), int(h.CsumStart)+int(h.CsumOffset)+2
	if end > len(frame) {
		return false
	}
	sum := partialSum([][]byte{frame}, start)
	binary.BigEndian.PutUint16(frame[end-2:], ^sum)
	return true
}

// reply sends one frame of the handler into the switch.
func (p *HandlerPort) reply(frame []byte) {
	peer := p.peer.Load()
	if peer == nil {
		p.stats.Drop(DropNoRoute, 1)
		return
	}
	p.stats.RxPackets.Add(1)
	p.stats.RxBytes.Add(uint64(len(frame)))
	b := p.replies.Get().(*replyBatch)
	b.segs[0] = frame
	b.frames[0] = Frame{Segs: b.segs[:], Len: len(frame)}
	(*peer).Send(b.frames[:])
	b.segs[0] = nil
	b.frames[0].Segs = nil
	p.replies.Put(b)
}
