// Package datapathtest holds test doubles for datapath.Port users: Capture,
// a port that keeps a copy of every frame it is sent. The datapath package's
// own tests cannot import it (it imports datapath) and wrap the same
// headertest.Recorder themselves.
//
// # Threat model
//
// None: tests only.
//
// # Concurrency
//
// A Capture is safe for concurrent use.
package datapathtest

import (
	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
)

// Capture is a datapath.Port that records the frames it is sent (see
// headertest.Recorder for what it keeps) and counts them in its TxPackets.
type Capture struct {
	headertest.Recorder
	name  string
	stats datapath.Stats
}

// NewCapture returns a Capture named name.
func NewCapture(name string) *Capture { return &Capture{name: name} }

// Name returns the name given to NewCapture.
func (c *Capture) Name() string { return c.name }

// Stats returns the port's counters.
func (c *Capture) Stats() *datapath.Stats { return &c.stats }

// Send records frames.
func (c *Capture) Send(frames []datapath.Frame) {
	if c.Call(len(frames)) {
		for _, f := range frames {
			c.Add(f.Segs, f.Len, f.Hdr, f.Queue)
		}
	}
	c.stats.TxPackets.Add(uint64(len(frames)))
}
