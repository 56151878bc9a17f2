package datapath

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// DropReason says why a frame was dropped.
type DropReason int

// Drop reasons. Their String forms are the suffixes of the drop_<reason>
// counters in the "port stats" log record.
const (
	// DropNoBuffer: the receiving guest had no free receive buffer.
	DropNoBuffer DropReason = iota
	// DropTooBig: the frame did not fit the receive buffers offered.
	DropTooBig
	// DropMalformed: the frame or its virtio-net header was invalid
	// (shorter than the header, GSO metadata the receiver cannot take).
	DropMalformed
	// DropQueueBroken: the guest broke the queue the frame was on.
	DropQueueBroken
	// DropNoQueue: the port had no running queue to put the frame on.
	DropNoQueue
	// DropSink: the sink uplink counted and dropped the frame.
	DropSink
	// DropSpoof: the switch dropped a frame whose source MAC or IPv4
	// address the port does not own (anti-spoofing). Added for the switch.
	DropSpoof
	// DropNoRoute: the switch had no port other than the sender to deliver
	// the frame to (its destination is on the sending port, or the sending
	// port is alone or detached). Added for the switch.
	DropNoRoute
	numDropReasons
)

// NumDropReasons is the number of drop reasons: 0..NumDropReasons-1 are
// every DropReason, for callers that export them all (the metrics).
const NumDropReasons = numDropReasons

var dropNames = [numDropReasons]string{
	DropNoBuffer:    "no_buffer",
	DropTooBig:      "too_big",
	DropMalformed:   "malformed",
	DropQueueBroken: "queue_broken",
	DropNoQueue:     "no_queue",
	DropSink:        "sink",
	DropSpoof:       "spoof",
	DropNoRoute:     "no_route",
}

// String returns the counter name of r.
func (r DropReason) String() string {
	if r < 0 || r >= numDropReasons {
		return "unknown"
	}
	return dropNames[r]
}

// Stats are a port's counters, from the switch's point of view: Rx counts
// frames that entered the backend through the port (for a guest port, the
// frames the guest transmitted), Tx counts frames the backend delivered out
// of the port (for a guest port, frames written into the guest's receive
// queue). All fields are safe for concurrent use; hot paths add per batch.
type Stats struct {
	RxPackets, RxBytes atomic.Uint64
	TxPackets, TxBytes atomic.Uint64
	drops              [numDropReasons]atomic.Uint64
}

// Drop adds n frames to the counter of reason r.
func (s *Stats) Drop(r DropReason, n uint64) {
	if n != 0 && r >= 0 && r < numDropReasons {
		s.drops[r].Add(n)
	}
}

// Drops returns the counter of reason r.
func (s *Stats) Drops(r DropReason) uint64 {
	if r < 0 || r >= numDropReasons {
		return 0
	}
	return s.drops[r].Load()
}

// LogAttrs returns the counters as log attributes, for the "port stats"
// record.
func (s *Stats) LogAttrs() []slog.Attr {
	a := []slog.Attr{
		slog.Uint64("rx_packets", s.RxPackets.Load()),
		slog.Uint64("rx_bytes", s.RxBytes.Load()),
		slog.Uint64("tx_packets", s.TxPackets.Load()),
		slog.Uint64("tx_bytes", s.TxBytes.Load()),
	}
	for r := DropReason(0); r < numDropReasons; r++ {
		a = append(a, slog.Uint64("drop_"+r.String(), s.drops[r].Load()))
	}
	return a
}

// LogStats writes one "port stats" record for p.
func LogStats(log *slog.Logger, p Port) {
	attrs := append([]slog.Attr{slog.String("port", p.Name())}, p.Stats().LogAttrs()...)
	log.LogAttrs(context.Background(), slog.LevelInfo, "port stats", attrs...)
}
