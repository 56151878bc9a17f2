package vhostusertest

import (
	"sync"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// One goroutine per queue pair. A guest's driver works each queue pair on
// its own CPU; so may a test or benchmark of multi-queue (VIRTIO_NET_F_MQ).
// Everything the data path of one queue pair touches is that pair's own:
// its two rings (driver, kick and call fds, counters) and the pairState
// below. So once SetupQueues (or StartRings) has returned, the data-path
// methods of different queue pairs may run concurrently, one goroutine per
// pair: AddFrame, SendFrame, AddTxFrame, Flush, TxDone, FillRx, RecvOn,
// DrainPair, and Kick, Calls and WaitCall on that pair's rings. The two
// halves touch disjoint state too, so a pair's transmit side (AddFrame,
// AddTxFrame, Flush, TxDone, its transmitq's Kick) and its receive side
// (FillRx, RecvOn, DrainPair, its receiveq's Calls and WaitCall) may even
// have a goroutine each. Methods
// that look at every pair (Recv, RecvHdr, WaitRecv, Drain) and messages
// (Request and everything that sends one, WriteTxFrame, SetRxRegion) stay
// one goroutine at a time, with no pair's data path running.

// pairState is the scratch and bookkeeping of one queue pair's data path.
type pairState struct {
	// Transmit scratch (AddFrame, AddTxFrame).
	txHdr   [virtio.NetHdrSize]byte
	txOut   [][]byte
	txBuf   []byte
	txElems []virtiotest.Elem
	// Receive chain shape (FillRx), for rxlFeatures.
	rxl         []uint32
	rxlFeatures uint64
	// Receive chains posted from a pool (SetRxRegion): head -> chain.
	rxExt map[uint16]*extChain
}

// pair returns queue pair qp's state.
func (f *Frontend) pair(qp int) *pairState { return &f.pairs[qp] }

// regionCounts counts the receive buffers read per region (RxInRegion),
// for every pair.
type regionCounts struct {
	mu sync.Mutex
	n  map[*Region]uint64
}

func (c *regionCounts) add(r *Region) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[*Region]uint64{}
	}
	c.n[r]++
}

func (c *regionCounts) get(r *Region) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[r]
}

// RecvOn returns the next frame the backend wrote into receiveq qp, as
// RecvHdr does for every queue.
func (f *Frontend) RecvOn(qp int) (hdr virtio.NetHdr, frame []byte, ok bool) {
	return f.recvOn(qp)
}

// DrainPair is Drain for receiveq qp alone.
func (f *Frontend) DrainPair(qp int) (frames, bytes int) {
	hlen := virtio.NetHdrLen(f.features)
	mrg := f.features&virtio.NetFMrgRxbuf != 0
	d := f.rings[2*qp].Driver
	got := false
	for {
		e, ok := d.Used()
		if !ok {
			break
		}
		got = true
		n := int(e.Len) - hlen
		if mrg && e.ID < uint32(d.Size()) {
			var hb [virtio.NetHdrSize]byte
			d.ReadIn(uint16(e.ID), hb[:hlen])
			var h virtio.NetHdr
			h.Decode(hb[:])
			for i := 1; i < int(h.NumBuffers); i++ {
				more, ok := d.Used()
				if !ok {
					break
				}
				n += int(more.Len)
			}
		}
		frames++
		bytes += n
	}
	if got && d.FreeDescs() >= min(int(d.Size())/2, 32) {
		if err := f.FillRx(qp); err != nil {
			f.t.Errorf("vhostusertest: %v", err)
		}
	}
	return frames, bytes
}
