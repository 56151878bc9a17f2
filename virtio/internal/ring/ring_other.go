//go:build !amd64 && !arm64

package ring

import "sync/atomic"

// fence is the target of the sequentially consistent operation used as a
// full barrier by the portable fallback.
var fence atomic.Uint32

// loadAcquire16 is the portable fallback: one naturally aligned halfword
// load followed by a full barrier (a seq-cst RMW on every Go port), which
// is stronger than an acquire.
func loadAcquire16(p *uint16) uint16 {
	v := *p
	fence.Add(1)
	return v
}

// storeRelease16 is the portable fallback: a full barrier, then one
// naturally aligned halfword store.
func storeRelease16(p *uint16, v uint16) {
	fence.Add(1)
	*p = v
}

// fullFence is a sequentially consistent RMW, implemented with full
// hardware barriers on every Go port.
func fullFence() { fence.Add(1) }
