package datapath

import (
	"crypto/rand"
	"encoding/binary"
	"math/bits"
	"sync/atomic"
)

// Receive steering over a guest's queue pairs (VIRTIO_NET_F_MQ).
//
// virtio 1.2 §5.1.6.5.6 "Automatic receive steering in multiqueue mode":
// "After the driver transmitted a packet of a flow on transmitqX, the
// device SHOULD cause incoming packets for that flow to be steered to
// receiveqX. For uni-directional protocols, or where no packets have been
// transmitted yet, the device MAY steer a packet to a random queue out of
// the specified receiveq1…receiveqn." (§5.1.6.4 "Processing of Incoming
// Packets" then applies per receive queue.)
//
// Every port keys the hash with the process's flowSeed, so the hash a
// transmit worker computes to learn travels with the frame (Frame.flow)
// through the switch or the loopback and the receiving port reuses it.
//
// A port with more than one queue pair keeps a steering table, as Linux's
// tun does for its queues (drivers/net/tun.c, "flow table"): flowHash
// (flowhash.go, symmetric, so a flow's replies hash like its requests)
// picks a bucket of steerWays entries, each an exact 32-bit hash and the
// queue pair that last transmitted a flow with that hash. Each transmit
// worker records its pair for every frame it transmits; Send looks each
// frame's hash up: a pair that transmitted the flow and is running gets
// it; any other frame goes to the running pair its hash picks, so that the
// flows of a one-way sender spread over every pair and each flow stays on
// one. A bucket holds steerWays flows: a flow that finds its bucket full
// takes an entry from another (round robin per pair), which then falls
// back to its hash's pick until it is transmitted again; only then, or
// when a guest moves a flow to another transmit queue, can a flow's frames
// already written to one receive queue be overtaken by later ones on
// another (Linux's RFS holds them back; a guest's stack copes either way).
//
// Send splits a batch by destination pair with the frames of each pair in
// their original order, and delivers each part under that receive queue's
// own lock: the frames of one flow are never reordered, and two senders
// contend only when they deliver to the same receive queue at once. With
// one queue pair none of this runs: Send delivers the batch as before.
//
// VIRTIO_NET_F_RSS and VIRTIO_NET_F_HASH_REPORT (§5.1.6.4.1, §5.1.6.5.7)
// are not offered: the guest cannot configure the hash or the indirection
// table, and received frames carry no hash.

// The steering table: steerBuckets buckets of steerWays entries, 16 KiB
// per port with more than one queue pair.
const (
	steerWays    = 4
	steerBuckets = 512 // a power of two
)

// steering is a port's receive steering state; nil with one queue pair.
type steering struct {
	seed uint64
	// entries hold hash<<32 | 1+pair, 0 when free. Transmit workers
	// store, senders load: a stale answer only picks another queue.
	entries [steerBuckets * steerWays]atomic.Uint64
	// next is each transmit worker's round-robin victim in a full
	// bucket (written by that worker only).
	next [MaxQueuePairs]uint8
}

// flowSeed keys the flow hash of every port of the process, so that a
// hash computed by the sending port serves the receiving one (Frame.flow).
// It is random: a remote sender cannot aim its flows at one queue pair.
var flowSeed = func() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (Go 1.24+)
	return binary.LittleEndian.Uint64(b[:])
}()

func newSteering() *steering { return &steering{seed: flowSeed} }

// hashOf returns f's flow hash under s's seed, the one f carries if it
// was made with the same.
func (s *steering) hashOf(f *Frame) uint32 {
	if f.flowSet && s.seed == flowSeed {
		return f.flow
	}
	return flowHash(f.Segs, s.seed)
}

// bucket returns the entries a flow with hash h may be in.
func (s *steering) bucket(h uint32) []atomic.Uint64 {
	i := int(h&(steerBuckets-1)) * steerWays
	return s.entries[i : i+steerWays : i+steerWays]
}

// learn records that queue pair qp (whose transmit worker calls it)
// transmitted frames. An entry is written only when it changes, so a
// steady flow costs a hash and a few loads per frame and no cache line
// moves between cores.
func (s *steering) learn(qp uint16, frames []Frame) {
	for i := range frames {
		h := flowHash(frames[i].Segs, s.seed)
		frames[i].flow, frames[i].flowSet = h, s.seed == flowSeed
		want := uint64(h)<<32 | uint64(qp+1)
		b := s.bucket(h)
		free := -1
		found := false
		for j := range b {
			e := b[j].Load()
			if e == 0 {
				if free < 0 {
					free = j
				}
				continue
			}
			if uint32(e>>32) == h {
				if e != want {
					b[j].Store(want)
				}
				found = true
				break
			}
		}
		if found {
			continue
		}
		if free < 0 {
			free = int(s.next[qp] % steerWays)
			s.next[qp]++
		}
		b[free].Store(want)
	}
}

// lookup returns the running queue pair (bit set in mask) that last
// transmitted the flow with hash h, if any.
func (s *steering) lookup(h, mask uint32) (uint8, bool) {
	b := s.bucket(h)
	for j := range b {
		v := b[j].Load()
		if uint32(v>>32) == h && v != 0 {
			qp := uint8(v) - 1
			return qp, mask&(1<<qp) != 0
		}
	}
	return 0, false
}

// runningPairs lists the queue pairs whose receive queue is started, from
// the port's started bits (bit 2*qp is receiveq qp).
type runningPairs struct {
	n    int
	mask uint32 // bit qp: receiveq qp is started
	list [MaxQueuePairs]uint8
}

func (p *GuestPort) runningRX() runningPairs {
	var r runningPairs
	started := p.started.Load()
	for qp := range p.pairs {
		if started&(1<<(2*qp)) != 0 {
			r.mask |= 1 << qp
			r.list[r.n] = uint8(qp)
			r.n++
		}
	}
	return r
}

// pairFor returns the queue pair frame f goes to among the running ones
// (rp.n > 0).
func (s *steering) pairFor(f *Frame, rp *runningPairs) uint8 {
	h := s.hashOf(f)
	if qp, ok := s.lookup(h, rp.mask); ok {
		return qp
	}
	// Lemire's multiply-shift maps h onto [0, n) without a division; the
	// bucket index used h's low bits, this uses its high ones.
	return rp.list[(uint64(h)*uint64(rp.n))>>32]
}

// sendSteered is Send for a port with more than one queue pair: each frame
// goes to the receive queue of its flow's pair (see the top of steer.go).
func (p *GuestPort) sendSteered(frames []Frame) {
	rp := p.runningRX()
	if rp.n <= 1 {
		p.sendTo(0, frames) // rxFor finds the one running queue, if any
		return
	}
	var dest [MaxBatch]uint8
	for len(frames) > 0 {
		batch := frames[:min(len(frames), MaxBatch)]
		frames = frames[len(batch):]
		var used uint32 // bit qp: some frame goes to pair qp
		for i := range batch {
			d := p.steer.pairFor(&batch[i], &rp)
			dest[i] = d
			used |= 1 << d
		}
		if used&(used-1) == 0 { // one destination: no split
			qp := uint16(bits.TrailingZeros32(used))
			if len(batch) == 1 && p.reserving.Load() != 0 {
				p.steered.Store(uint32(qp) + 1) // inplace.go: where a reader reserves next
			}
			p.sendTo(qp, batch)
			continue
		}
		for used != 0 {
			qp := uint8(bits.TrailingZeros32(used))
			used &= used - 1
			p.sendPart(qp, batch, dest[:len(batch)])
		}
	}
}

// sendTo delivers frames to the receive queue of pair qp (or the first
// running one).
func (p *GuestPort) sendTo(qp uint16, frames []Frame) {
	r := p.rxFor(qp)
	if r == nil {
		p.stats.Drop(DropNoQueue, uint64(len(frames)))
		return
	}
	n, reason := p.push(r, frames)
	r.mu.Unlock()
	p.stats.Drop(reason, uint64(len(frames)-n))
}

// sendPart delivers the frames of batch whose dest is qp, in order, to the
// receive queue of pair qp (or the first running one). They are gathered
// into the queue's own scratch under its lock.
func (p *GuestPort) sendPart(qp uint8, batch []Frame, dest []uint8) {
	r := p.rxFor(uint16(qp))
	if r == nil {
		k := 0
		for _, d := range dest {
			if d == qp {
				k++
			}
		}
		p.stats.Drop(DropNoQueue, uint64(k))
		return
	}
	part := r.part[:0]
	for i, d := range dest {
		if d == qp {
			part = append(part, batch[i])
		}
	}
	n, reason := p.push(r, part)
	r.mu.Unlock()
	p.stats.Drop(reason, uint64(len(part)-n))
}
