package datapath

import (
	"github.com/arcnet/vhost-arcnet/virtio"
)

// MaxBatch is the largest number of frames a port hands over in one call.
const MaxBatch = 64

// Frame is one Ethernet frame on its way between two ports, as a scatter
// list. The segments may point into a guest's memory (zero copy), so a Frame
// is valid only during the Send call it is passed to; a port that keeps
// frame bytes must copy them.
type Frame struct {
	// Hdr carries the virtio-net offload metadata (checksum and GSO) of the
	// frame; NumBuffers is meaningless here.
	Hdr virtio.NetHdr
	// Segs is the frame without its virtio-net header, in order.
	Segs [][]byte
	// Len is the total length of Segs.
	Len int
	// Queue is the queue the frame arrived on at the port that sent it
	// (a guest's queue pair, a TAP or AF_XDP queue). Ports key per-queue
	// scratch state on it: all frames of one Send call share it, and one
	// goroutine sends per queue. A guest port does not deliver by it: it
	// picks each frame's receive queue by flow (steer.go).
	Queue uint16

	// flow is the frame's flow hash (flowhash.go, keyed with flowSeed)
	// when flowSet: a guest port's transmit worker that hashed the frame
	// to learn its steering hands the hash on, and a receiving guest port
	// (through the switch or the loopback, which change no address) does
	// not hash the same headers again. Frames made outside the package
	// never carry one.
	flow    uint32
	flowSet bool
}

// Port is one attachment point of the datapath: a guest, an uplink, the
// gateway's services.
type Port interface {
	// Name identifies the port in logs and statistics.
	Name() string
	// Send delivers frames out of the port, all belonging to the same
	// queue. It returns when it no longer needs the frames' bytes; frames
	// it could not take are dropped and counted in the port's statistics.
	Send(frames []Frame)
	// Stats returns the port's counters.
	Stats() *Stats
}

// FrameSource produces frames for a GuestPort's receive workers (the
// "source" measurement uplink). Fill writes up to len(frames) frames for
// receive queue pair q and returns how many it wrote; the frames' segments
// must stay valid until the next Fill on the same queue.
type FrameSource interface {
	Fill(q uint16, frames []Frame) int
}

// copyFrame copies the scatter list segs into dst and returns the number of
// bytes copied (at most len(dst)).
func copyFrame(dst []byte, segs [][]byte) int {
	n := 0
	for _, s := range segs {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], s)
	}
	return n
}

// appendTail appends to dst the scatter list segs without its first skip
// bytes, and returns the extended list and the number of bytes appended.
func appendTail(dst, segs [][]byte, skip int) ([][]byte, int) {
	n := 0
	for _, seg := range segs {
		if skip >= len(seg) {
			skip -= len(seg)
			continue
		}
		dst = append(dst, seg[skip:])
		n += len(seg) - skip
		skip = 0
	}
	return dst, n
}
