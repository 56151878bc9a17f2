//go:build !amd64 && !arm64

package prefetch

// Available reports whether Lines and LinesW prefetch on this
// architecture: no assembly says how here.
const Available = false

func lines(p *uintptr, n int) {}

func linesW(p *uintptr, n int) {}
