package virtio

// WritePlainPacked is NetRX.WritePlain's packed fast path alone (tests
// check when it is taken).
func (r *NetRX) WritePlainPacked(payload [][]byte) bool {
	total := uint64(r.hdrLen)
	for _, p := range payload {
		total += uint64(len(p))
	}
	return r.q.writePlainPacked(r.hdrLen, total, payload)
}

// PackedBook returns copies of a packed queue's per-descriptor shadow (what
// Rewind writes back) and per-buffer descriptor counts (what Push skips).
func (q *Queue) PackedBook() (shadow []uint64, pcount []uint16) {
	return append([]uint64(nil), q.shadow...), append([]uint16(nil), q.pcount...)
}
