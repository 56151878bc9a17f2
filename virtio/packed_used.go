package virtio

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
