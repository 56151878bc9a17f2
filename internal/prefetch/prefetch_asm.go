//go:build amd64 || arm64

package prefetch

// Available reports whether Lines and LinesW prefetch on this
// architecture.
const Available = true

// lines is implemented in prefetch_$GOARCH.s: it prefetches the n
// addresses at p.
//
//go:noescape
func lines(p *uintptr, n int)

// linesW is implemented in prefetch_$GOARCH.s: it prefetches the n
// addresses at p for writing.
//
//go:noescape
func linesW(p *uintptr, n int)
