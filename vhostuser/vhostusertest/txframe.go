package vhostusertest

import (
	"fmt"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// Frames written once into guest memory and transmitted again and again
// without a copy: a guest sending from pages it does not rewrite (the page
// cache with sendfile, MSG_ZEROCOPY). AddFrame copies every frame into the
// ring's buffer slots, as a guest's stack copies from user space; for a
// 64 KiB frame that copy costs the sending guest as much as the backend's
// copy into the receiver, so a bulk benchmark that wants the backend's
// cost uses a TxFrame.

// TxFrame is a frame with its virtio-net header in guest memory, next to
// transmitq's ring (WriteTxFrame). The device only reads it, so any number
// of chains in flight may point at it.
type TxFrame struct {
	qp       int
	hdrGPA   uint64 // the header, hdrLen bytes, then the frame
	hdrLen   int
	frameLen int
}

// Len returns the frame's length without the virtio-net header.
func (t *TxFrame) Len() int { return t.frameLen }

// WriteTxFrame writes hdr and frame into free guest memory of the region
// that holds transmitq qp and returns it for AddTxFrame. The memory is
// taken for good: SetupQueues (which lays the rings out afresh) ends the
// TxFrames written before it.
func (f *Frontend) WriteTxFrame(qp int, hdr virtio.NetHdr, frame []byte) (*TxFrame, error) {
	if qp < 0 || 2*qp+1 >= len(f.rings) {
		return nil, fmt.Errorf("vhostusertest: no transmitq %d", qp)
	}
	reg := f.rings[2*qp+1].region
	hlen := virtio.NetHdrLen(f.features)
	need := (uint64(hlen+len(frame)) + 63) &^ 63
	if reg.Size-reg.next < need {
		return nil, fmt.Errorf("vhostusertest: region %#x has no room for a %d-byte frame", reg.GPA, len(frame))
	}
	var h [virtio.NetHdrSize]byte
	hdr.Encode(h[:])
	b := reg.Data[reg.next : reg.next+need]
	copy(b, h[:hlen])
	copy(b[hlen:], frame)
	t := &TxFrame{qp: qp, hdrGPA: reg.GPA + reg.next, hdrLen: hlen, frameLen: len(frame)}
	reg.next += need
	return t, nil
}

// AddTxFrame adds t to its transmitq without copying it and without
// publishing it, as AddFrame does (the same descriptors for the same
// layout: header alone, then SlotSize pieces; LayoutSingle: header and
// frame together in SlotSize pieces).
func (f *Frontend) AddTxFrame(t *TxFrame, layout Layout) error {
	slot := uint64(f.opts.SlotSize)
	ps := f.pair(t.qp)
	es := ps.txElems[:0]
	gpa, left := t.hdrGPA, uint64(t.hdrLen+t.frameLen)
	if layout != LayoutSingle {
		es = append(es, virtiotest.Elem{GPA: gpa, Len: uint32(t.hdrLen)})
		gpa += uint64(t.hdrLen)
		left -= uint64(t.hdrLen)
	}
	for left > 0 {
		n := min(left, slot)
		es = append(es, virtiotest.Elem{GPA: gpa, Len: uint32(n)})
		gpa += n
		left -= n
	}
	ps.txElems = es
	return f.addTX(t.qp, nil, es, layout == LayoutIndirect)
}
