package datapath

import "sync/atomic"

// QueueStats are one queue pair's share of a guest port's frame counters
// (GuestPort.QueueStats): Rx counts the frames the guest transmitted on the
// pair's transmit queue, Tx the frames written into the pair's receive
// queue. With several queue pairs (--queue-pairs, virtio 1.2 §5.1.6.5.6
// "Automatic receive steering in multiqueue mode") they show how the
// guest's flows spread over the pairs; summed over the pairs they are the
// port's Stats packets and bytes. Drops are counted per port only. Safe
// for concurrent use; the hot paths add per batch.
type QueueStats struct {
	RxPackets, RxBytes atomic.Uint64
	TxPackets, TxBytes atomic.Uint64
	// Held counts the frames that found the pair's receive ring full and
	// were held in its backlog (GuestPortOptions.Backlog) instead of
	// dropped; each is also in TxPackets once it is written.
	Held atomic.Uint64
}

// QueuePairs returns how many queue pairs the port offers (its
// QueueStats indices).
func (p *GuestPort) QueuePairs() int { return len(p.pairs) }

// QueueStats returns the counters of queue pair qp, or nil when the port
// has no such pair.
func (p *GuestPort) QueueStats(qp int) *QueueStats {
	if qp < 0 || qp >= len(p.pairs) {
		return nil
	}
	return &p.pairs[qp].stats
}
