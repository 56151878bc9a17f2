package vhostusertest

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// Layout is how a transmitted frame is laid out in descriptors.
type Layout int

const (
	// LayoutSplit puts the virtio-net header in its own descriptor and
	// the frame in SlotSize pieces after it (Linux without ANY_LAYOUT).
	LayoutSplit Layout = iota
	// LayoutSingle puts header and frame together, in SlotSize pieces
	// (one descriptor for a small frame).
	LayoutSingle
	// LayoutIndirect is LayoutSplit through one indirect descriptor table.
	LayoutIndirect
)

// Send transmits frame on queue pair 0 with a zero virtio-net header,
// header and frame in separate descriptors.
func (f *Frontend) Send(frame []byte) error {
	return f.SendFrame(0, virtio.NetHdr{}, frame, LayoutSplit)
}

// SendFrame transmits one frame on queue pair qp: AddFrame, then Flush.
func (f *Frontend) SendFrame(qp int, hdr virtio.NetHdr, frame []byte, layout Layout) error {
	if err := f.AddFrame(qp, hdr, frame, layout); err != nil {
		return err
	}
	return f.Flush(qp)
}

// AddFrame adds a frame to transmitq qp without publishing it, so a test
// can publish a batch with one Flush. When the ring is full it publishes
// what it has, and waits (up to Timeout) for the backend to use buffers.
func (f *Frontend) AddFrame(qp int, hdr virtio.NetHdr, frame []byte, layout Layout) error {
	ps := f.pair(qp)
	ps.txHdr = [virtio.NetHdrSize]byte{}
	hdr.Encode(ps.txHdr[:])
	hlen := virtio.NetHdrLen(f.features)
	slot := int(f.opts.SlotSize)
	// Scratch slices, reused: AddChain copies the bytes into the ring's
	// buffer slots at once.
	out := ps.txOut[:0]
	switch layout {
	case LayoutSingle:
		ps.txBuf = append(append(ps.txBuf[:0], ps.txHdr[:hlen]...), frame...)
		out = pieces(out, ps.txBuf, slot)
	default:
		out = append(out, ps.txHdr[:hlen])
		out = pieces(out, frame, slot)
	}
	ps.txOut = out
	return f.addTX(qp, out, nil, layout == LayoutIndirect)
}

// addTX adds one chain to transmitq qp: out copied into buffer slots
// (AddChain), or elems as they are (AddElems). When the ring is full it
// publishes what it has, and waits (up to Timeout) for the backend to use
// buffers.
func (f *Frontend) addTX(qp int, out [][]byte, elems []virtiotest.Elem, indirect bool) error {
	r := f.rings[2*qp+1]
	var deadline time.Time // set when the ring is first found full (a clock read per frame showed in profiles)
	for {
		f.reclaimTX(r)
		var err error
		if elems != nil {
			_, err = r.Driver.AddElems(elems, indirect)
		} else {
			_, err = r.Driver.AddChain(out, nil, indirect)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, virtiotest.ErrFull) {
			return err
		}
		if err := f.Flush(qp); err != nil {
			return err
		}
		if now := time.Now(); deadline.IsZero() {
			deadline = now.Add(f.opts.Timeout)
		} else if now.After(deadline) {
			return fmt.Errorf("vhostusertest: transmitq %d stays full: %w", qp, os.ErrDeadlineExceeded)
		}
		_, _ = waitReadable(r.callR, time.Millisecond)
		f.Calls(r.Index)
	}
}

func pieces(out [][]byte, b []byte, n int) [][]byte {
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	if len(b) > 0 {
		out = append(out, b)
	}
	return out
}

// Flush publishes the frames added to transmitq qp and kicks if the
// backend asked for it (VIRTIO_F_EVENT_IDX avail_event, or the used ring's
// NO_NOTIFY flag).
func (f *Frontend) Flush(qp int) error {
	r := f.rings[2*qp+1]
	if r.Driver.Publish() {
		return f.Kick(r.Index)
	}
	return nil
}

// reclaimTX frees the transmit chains the backend used.
func (f *Frontend) reclaimTX(r *Ring) {
	for {
		if _, ok := r.Driver.Used(); !ok {
			return
		}
	}
}

// TxDone frees the transmit chains the backend has used on queue pair qp
// and reports whether every frame added so far was used.
func (f *Frontend) TxDone(qp int) bool {
	r := f.rings[2*qp+1]
	f.reclaimTX(r)
	return r.Driver.LastUsed() == r.Driver.AvailIdx()
}

// rxLens returns the descriptor lengths of one receive chain.
func (f *Frontend) rxLens() []uint32 {
	if f.features&virtio.NetFMrgRxbuf != 0 {
		return []uint32{f.opts.SlotSize}
	}
	var lens []uint32
	for left := f.opts.RxBufLen; left > 0; {
		n := min(left, f.opts.SlotSize)
		lens = append(lens, n)
		left -= n
	}
	return lens
}

// FillRx posts receive chains on receiveq qp until the ring or its buffer
// slots are full, publishes them and kicks if asked.
func (f *Frontend) FillRx(qp int) error {
	r := f.rings[2*qp]
	d := r.Driver
	ps := f.pair(qp)
	if ps.rxl == nil || ps.rxlFeatures != f.features {
		ps.rxl, ps.rxlFeatures = f.rxLens(), f.features
	}
	lens := ps.rxl
	added := 0
	for {
		// The avail ring holds at most Size entries outstanding (a
		// packed ring has no avail ring: AddChain says when its
		// descriptors run out).
		if !d.Packed() && uint16(d.AvailIdx()-d.LastUsed()) >= d.Size() {
			break
		}
		var err error
		if p := f.rxPools[qp]; p != nil {
			err = f.addPoolChain(qp, d, p, lens)
		} else {
			_, err = d.AddChain(nil, lens, f.opts.RxIndirect)
		}
		if err != nil {
			if errors.Is(err, virtiotest.ErrFull) {
				break
			}
			return err
		}
		added++
	}
	if added > 0 && d.Publish() {
		return f.Kick(r.Index)
	}
	return nil
}

// RecvHdr returns the next frame the backend wrote into any receive queue,
// with its virtio-net header; ok is false when there is none. With
// VIRTIO_NET_F_MRG_RXBUF it gathers num_buffers chains. Buffers are
// reposted as they are consumed. A frame that breaks the virtio-net rules
// fails the test.
func (f *Frontend) RecvHdr() (hdr virtio.NetHdr, frame []byte, ok bool) {
	for qp := 0; 2*qp < len(f.rings); qp++ {
		if hdr, frame, ok = f.recvOn(qp); ok {
			return hdr, frame, true
		}
	}
	return hdr, nil, false
}

// Recv returns the next received frame without its virtio-net header.
func (f *Frontend) Recv() ([]byte, bool) {
	_, frame, ok := f.RecvHdr()
	return frame, ok
}

func (f *Frontend) recvOn(qp int) (hdr virtio.NetHdr, frame []byte, ok bool) {
	r := f.rings[2*qp]
	d := r.Driver
	e, ok := d.Used()
	if !ok {
		return hdr, nil, false
	}
	buf, err := f.readRx(qp, d, e)
	if err != nil {
		f.t.Errorf("vhostusertest: receiveq %d: %v", qp, err)
		return hdr, nil, false
	}
	hlen := virtio.NetHdrLen(f.features)
	if len(buf) < hlen {
		f.t.Errorf("vhostusertest: receiveq %d: used length %d is shorter than the header", qp, len(buf))
		return hdr, nil, false
	}
	var hb [virtio.NetHdrSize]byte
	copy(hb[:], buf[:hlen])
	hdr.Decode(hb[:])
	frame = buf[hlen:]
	if f.features&virtio.NetFMrgRxbuf != 0 {
		if hdr.NumBuffers == 0 {
			f.t.Errorf("vhostusertest: receiveq %d: num_buffers 0", qp)
			return hdr, nil, false
		}
		for i := 1; i < int(hdr.NumBuffers); i++ {
			e, ok := d.Used()
			if !ok {
				f.t.Errorf("vhostusertest: receiveq %d: num_buffers %d but only %d used", qp, hdr.NumBuffers, i)
				return hdr, nil, false
			}
			more, err := f.readRx(qp, d, e)
			if err != nil {
				f.t.Errorf("vhostusertest: receiveq %d: %v", qp, err)
				return hdr, nil, false
			}
			frame = append(frame, more...)
		}
	} else if hlen == virtio.NetHdrSize && hdr.NumBuffers != 1 {
		// virtio 1.2 §5.1.6.4.1: without MRG_RXBUF "the device MUST set
		// num_buffers to 1".
		f.t.Errorf("vhostusertest: receiveq %d: num_buffers %d without MRG_RXBUF", qp, hdr.NumBuffers)
	}
	if d.FreeDescs() >= min(int(d.Size())/2, 32) {
		if err := f.FillRx(qp); err != nil {
			f.t.Errorf("vhostusertest: %v", err)
		}
	}
	return hdr, frame, true
}

// readRx copies the bytes the backend wrote into used receive chain e of
// queue pair qp, from wherever its buffers are.
func (f *Frontend) readRx(qp int, d *virtiotest.Driver, e virtiotest.UsedElem) ([]byte, error) {
	ext := f.pair(qp).rxExt
	if c := ext[uint16(e.ID)]; c != nil && e.ID < uint32(d.Size()) {
		delete(ext, uint16(e.ID))
		return f.readExt(c, e.Len)
	}
	return f.readUsed(d, e)
}

// readUsed copies the bytes the backend wrote into used chain e.
func (f *Frontend) readUsed(d *virtiotest.Driver, e virtiotest.UsedElem) ([]byte, error) {
	if e.ID >= uint32(d.Size()) {
		return nil, fmt.Errorf("used id %d out of range", e.ID)
	}
	buf := make([]byte, e.Len)
	if n := d.ReadIn(uint16(e.ID), buf); n != len(buf) {
		return nil, fmt.Errorf("used length %d exceeds the %d-byte chain %d", e.Len, n, e.ID)
	}
	return buf, nil
}

// Drain consumes every frame waiting in the receive queues without copying
// it and returns how many frames and payload bytes (without virtio-net
// headers) there were; buffers are reposted. It allocates nothing:
// benchmarks use it.
func (f *Frontend) Drain() (frames, bytes int) {
	for qp := 0; 2*qp < len(f.rings); qp++ {
		n, b := f.DrainPair(qp)
		frames += n
		bytes += b
	}
	return frames, bytes
}

// WaitRecv waits (up to Timeout) for the next received frame.
func (f *Frontend) WaitRecv() ([]byte, error) {
	_, frame, err := f.WaitRecvHdr()
	return frame, err
}

// WaitRecvHdr waits (up to Timeout) for the next received frame and
// returns it with its header.
func (f *Frontend) WaitRecvHdr() (virtio.NetHdr, []byte, error) {
	deadline := time.Now().Add(f.opts.Timeout)
	for {
		if hdr, frame, ok := f.RecvHdr(); ok {
			return hdr, frame, nil
		}
		if time.Now().After(deadline) {
			return virtio.NetHdr{}, nil, fmt.Errorf("vhostusertest: no frame received: %w", os.ErrDeadlineExceeded)
		}
		// Sleep on the call fd of receiveq 0, briefly: frames may come on
		// another queue, or without a call when interrupts are off.
		_, _ = waitReadable(f.rings[0].callR, 2*time.Millisecond)
		f.Calls(0)
	}
}
