//go:build amd64 || arm64

package ring

// loadAcquire16 is implemented in ring_$GOARCH.s.
//
//go:noescape
func loadAcquire16(p *uint16) uint16

// storeRelease16 is implemented in ring_$GOARCH.s.
//
//go:noescape
func storeRelease16(p *uint16, v uint16)

// fullFence is implemented in ring_$GOARCH.s.
func fullFence()
