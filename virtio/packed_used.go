package virtio

import "encoding/binary"

// descWord is bytes 8..15 of a packed descriptor (virtio 1.2 §2.8.13,
// struct pvirtq_desc: le32 len, le16 id, le16 flags) as one little-endian
// word.
func descWord(length uint32, id, flags uint16) uint64 {
	return uint64(length) | uint64(id)<<32 | uint64(flags)<<48
}

// availFlags returns the VIRTQ_DESC_F_AVAIL and VIRTQ_DESC_F_USED bits of
// a descriptor made available at position pos (virtio 1.2 §2.8.1: AVAIL
// equal to the wrap counter, USED not): AVAIL with the wrap counter 1,
// USED with 0.
func availFlags(pos uint16) uint16 {
	return descFUsed >> (8 * (pos >> 15)) // descFUsed>>8 == descFAvail
}

// shadowWord is what Pop keeps of the descriptor at position pos for
// Rewind (bytes 8..15, descWord) with the flags' AVAIL and USED bits
// flipped by availFlags(pos): rewindPacked flips them back, so any flags
// come back as they were, and the word of a slot whose driver makes the
// same buffer available round after round, as drivers do, stays the same
// although the wrap counter changes (keepShadow then stores nothing).
func shadowWord(length uint32, id, flags, pos uint16) uint64 {
	return descWord(length, id, flags^availFlags(pos))
}

// keepShadow records w as the shadow of ring slot idx, storing only when
// it changed: at 64 B the receive path is bound by its stores.
func (q *Queue) keepShadow(idx uint32, w uint64) {
	if q.shadow[idx] != w {
		q.shadow[idx] = w
	}
}

// usedFlags returns the flags of a used descriptor written at position
// pos (virtio 1.2 §2.8.22: VIRTQ_DESC_F_AVAIL and VIRTQ_DESC_F_USED both
// equal to the Used Ring Wrap Counter, pos's bit 15), with
// VIRTQ_DESC_F_WRITE when the device wrote into the buffer (§2.8.4: the
// Element Length is valid then).
func usedFlags(pos uint16, written uint32) uint16 {
	f := (descFAvail | descFUsed) * (pos >> 15) // the wrap counter: 0 or 1
	if written > 0 {
		f |= descFWrite
	}
	return f
}

// putUsedPacked writes the used descriptor of buffer id, of which the
// device wrote written bytes, at position pos (§2.8.22) and marks it in
// the dirty log. The flags of the first used descriptor since the last
// Publish wait in q.firstFlags for Publish's release store; any other one
// is written whole with one 8-byte store (len, id, flags: the driver reads
// used descriptors in ring order, so it reads this one only after the
// first one's flags, whose release store orders this). The caller checked
// that pos is a consumed descriptor and advances q.usedIdx.
func (q *Queue) putUsedPacked(pos, id uint16, written uint32) {
	slot := uint32(pos&packedIdxMask) * descSize
	d := q.desc[slot+8 : slot+16 : slot+16]
	f := usedFlags(pos, written)
	if pos != q.published {
		binary.LittleEndian.PutUint64(d, descWord(written, id, f))
	} else {
		binary.LittleEndian.PutUint32(d[0:4], written)
		binary.LittleEndian.PutUint16(d[4:6], id)
		q.firstFlags = f
	}
	if l := q.log.Load(); l != nil {
		l.Mark(q.descGPA+uint64(slot)+8, 8)
	}
}
