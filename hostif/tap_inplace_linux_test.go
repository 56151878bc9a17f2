//go:build linux

package hostif

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// readingPort is a peer that reads every byte of the frames it is sent,
// as the router and the switch read a frame's head.
type readingPort struct {
	stats datapath.Stats
	sum   byte
}

func (p *readingPort) Name() string           { return "reader" }
func (p *readingPort) Stats() *datapath.Stats { return &p.stats }
func (p *readingPort) Send(frames []datapath.Frame) {
	for _, f := range frames {
		for _, s := range f.Segs {
			for _, b := range s {
				p.sum += b
			}
		}
	}
}

// TestInPlaceFaultsContained: a frame read in place whose guest memory
// went away (a frontend shrank its memory file) faults while the reader
// copies it out (copyOut) or while the peer reads it (sendGuarded): both
// report it, the mapping's watch is told (once), and the reader goes on.
func TestInPlaceFaultsContained(t *testing.T) {
	b, told, shrink := virtiotest.ShrinkableMapping(t, 64<<10)
	bufs := [][]byte{b[:2048], b[2048:8192]}
	dst := make([]byte, 3000)
	require.True(t, copyOut(dst, bufs), "memory still there")
	p := &readingPort{}
	frames := []datapath.Frame{{Segs: bufs, Len: 8192}}
	require.True(t, sendGuarded(p, frames))
	require.Zero(t, *told)

	shrink()
	require.False(t, copyOut(dst, bufs))
	require.Equal(t, 1, *told)
	require.False(t, sendGuarded(p, frames))
	require.Equal(t, 1, *told, "a mapping is told once")
	// The goroutine goes on, and its own faults are not turned into
	// recoverable panics after the guarded calls.
	require.True(t, copyOut(dst, [][]byte{make([]byte, 100)}))
}
