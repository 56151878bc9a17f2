package virtio

// FirstChain is the NetRX's first scratch chain, which the general receive
// path pops into and the packed fast path leaves alone: tests see which
// one wrote a frame.
func (r *NetRX) FirstChain() *Chain { return &r.chains[0] }

// PackedBook returns copies of a packed queue's per-descriptor shadow (what
// Rewind writes back) and per-buffer descriptor counts (what Push skips).
func (q *Queue) PackedBook() (shadow []uint64, pcount []uint16) {
	return append([]uint64(nil), q.shadow...), append([]uint16(nil), q.pcount...)
}
