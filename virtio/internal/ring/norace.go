//go:build !race

package ring

import (
	"math/bits"
	"sync/atomic"
)

func raceAcquire(*uint16) {}
func raceRelease(*uint16) {}

// loadAcquireHi16 is LoadAcquireHi16 with sync/atomic's 32-bit load (an
// acquire, and a compiler barrier, at least).
func loadAcquireHi16(p *uint32) uint16 {
	v := atomic.LoadUint32(p)
	if bigEndian {
		// bytes b0 b1 b2 b3 read as b0<<24|b1<<16|b2<<8|b3: the
		// little-endian b2|b3<<8 is the low half, byte-swapped.
		return bits.ReverseBytes16(uint16(v))
	}
	return uint16(v >> 16)
}
