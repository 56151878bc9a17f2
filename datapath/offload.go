package datapath

import (
	"encoding/binary"
	"math/bits"

	"github.com/arcnet/vhost-arcnet/datapath/header"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// csumScratch is how much of a frame's head the receive path may rewrite in
// backend memory to complete a checksum: Ethernet + VLAN + IPv4/IPv6 with
// options + TCP with options (ARCHITECTURE.md "A frame's path").
const csumScratch = 256

// offloads are the offload features one side of a guest port negotiated.
type offloads struct {
	csum      bool // VIRTIO_NET_F_CSUM: the guest may send partial checksums
	hostTSO4  bool
	hostTSO6  bool
	hostUFO   bool
	hostECN   bool
	guestCsum bool // VIRTIO_NET_F_GUEST_CSUM: the guest takes partial checksums
	guestTSO4 bool
	guestTSO6 bool
	guestUFO  bool
	guestECN  bool
}

func offloadsOf(f uint64) offloads {
	return offloads{
		csum:      f&virtio.NetFCsum != 0,
		hostTSO4:  f&virtio.NetFHostTSO4 != 0,
		hostTSO6:  f&virtio.NetFHostTSO6 != 0,
		hostUFO:   f&virtio.NetFHostUFO != 0,
		hostECN:   f&virtio.NetFHostECN != 0,
		guestCsum: f&virtio.NetFGuestCsum != 0,
		guestTSO4: f&virtio.NetFGuestTSO4 != 0,
		guestTSO6: f&virtio.NetFGuestTSO6 != 0,
		guestUFO:  f&virtio.NetFGuestUFO != 0,
		guestECN:  f&virtio.NetFGuestECN != 0,
	}
}

// validTX reports whether a transmitted frame's header follows virtio 1.2
// §5.1.6.2: "If the VIRTIO_NET_F_CSUM feature has not been negotiated, the
// driver MUST set flags to zero" (bar DATA_VALID, which a device ignores on
// transmit), a GSO type needs the matching HOST_ feature, NEEDS_CSUM and a
// gso_size, and the checksum field must lie inside the frame.
func (o offloads) validTX(h *virtio.NetHdr, frameLen int) bool {
	if h.Flags&virtio.NetHdrFNeedsCsum != 0 {
		if !o.csum || int(h.CsumStart)+int(h.CsumOffset)+2 > frameLen {
			return false
		}
	}
	gso := h.GSOType &^ virtio.NetHdrGSOECN
	if h.GSOType&virtio.NetHdrGSOECN != 0 && !o.hostECN {
		return false
	}
	switch gso {
	case virtio.NetHdrGSONone:
		return true
	case virtio.NetHdrGSOTCPv4:
		if !o.hostTSO4 {
			return false
		}
	case virtio.NetHdrGSOTCPv6:
		if !o.hostTSO6 {
			return false
		}
	case virtio.NetHdrGSOUDP:
		if !o.hostUFO {
			return false
		}
	default:
		return false
	}
	return h.GSOSize != 0 && h.Flags&virtio.NetHdrFNeedsCsum != 0
}

// acceptsGSO reports whether a guest with these offloads takes a frame of
// GSO type t unsegmented (virtio 1.2 §5.1.6.4.1).
func (o offloads) acceptsGSO(t uint8) bool {
	if t&virtio.NetHdrGSOECN != 0 && !o.guestECN {
		return false
	}
	switch t &^ virtio.NetHdrGSOECN {
	case virtio.NetHdrGSONone:
		return true
	case virtio.NetHdrGSOTCPv4:
		return o.guestTSO4
	case virtio.NetHdrGSOTCPv6:
		return o.guestTSO6
	case virtio.NetHdrGSOUDP:
		return o.guestUFO
	}
	return false
}

// prepare adapts frame f to what r's guest negotiated and returns the header
// and scatter list to write. A partial checksum for a guest without
// GUEST_CSUM is completed in software on a copy of the frame's head (the
// source's bytes are never written); a GSO frame for a guest without the
// matching GUEST_ feature is refused (segmentation belongs to the switch).
func (r *rxQueue) prepare(f *Frame) (virtio.NetHdr, [][]byte, bool) {
	h := f.Hdr
	h.NumBuffers = 0
	if h.GSOType != virtio.NetHdrGSONone && !r.offload.acceptsGSO(h.GSOType) {
		return h, nil, false
	}
	if h.Flags&virtio.NetHdrFNeedsCsum == 0 || r.offload.guestCsum {
		if !r.offload.guestCsum {
			h.Flags = 0
		}
		return h, f.Segs, true
	}
	end := int(h.CsumStart) + int(h.CsumOffset) + 2
	if end > csumScratch || end > f.Len {
		return h, nil, false
	}
	sum := partialSum(f.Segs, int(h.CsumStart))
	head := r.scratch[:end]
	copyFrame(head, f.Segs)
	// The field holds the pseudo-header sum the sender seeded; partialSum
	// included it, so the complement of the whole sum is the checksum
	// (RFC 1071 §1).
	binary.BigEndian.PutUint16(head[end-2:], ^sum)
	segs, _ := appendTail(append(r.segs[:0], head), f.Segs, end)
	r.segs = segs
	h.Flags = 0
	return h, segs, true
}

// partialSum returns the folded 16-bit one's-complement sum (RFC 1071) of the
// bytes of segs from offset start to the end. A segment that starts at an
// odd offset of the summed range has its bytes in the other halves of the
// 16-bit words: its sum is byte-swapped (RFC 1071 §2(B), byte order
// independence).
func partialSum(segs [][]byte, start int) uint16 {
	var sum uint16
	odd := false
	for _, s := range segs {
		if start >= len(s) {
			start -= len(s)
			continue
		}
		s = s[start:]
		start = 0
		c := header.Checksum(s, 0)
		if odd {
			c = bits.ReverseBytes16(c)
		}
		sum = header.ChecksumCombine(sum, c)
		odd = odd != (len(s)%2 == 1)
	}
	return sum
}
