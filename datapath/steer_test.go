package datapath

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// mqRig is one guest with several queue pairs (driver side: virtiotest
// drivers in one memory) attached to a GuestPort.
type mqRig struct {
	t      testing.TB
	port   *GuestPort
	rx, tx []*virtiotest.Driver
	rxq    []*virtio.Queue
	txq    []*virtio.Queue
	txKick []*bell
}

func newMQRig(t testing.TB, pairs int) *mqRig {
	t.Helper()
	return newMQRigOpt(t, GuestPortOptions{Name: "guest0", QueuePairs: pairs})
}

// newMQRigOpt is newMQRig with the port's options (QueuePairs pairs).
func newMQRigOpt(t testing.TB, opt GuestPortOptions) *mqRig {
	t.Helper()
	const features = baseFeatures | virtio.NetFMrgRxbuf | virtio.NetFMQ
	pairs := opt.QueuePairs
	mem := make([]byte, 2*pairs*halfSize)
	m, err := virtio.NewMemory([]virtio.Region{{GuestPhysAddr: rigGPA, Size: uint64(len(mem)), UserAddr: rigGPA, Data: mem}})
	require.NoError(t, err)
	p, err := NewGuestPort(opt)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	r := &mqRig{t: t, port: p}
	for i := 0; i < 2*pairs; i++ {
		off := i * halfSize
		d, err := virtiotest.NewDriver(mem[off:off+halfSize], rigGPA+uint64(off), 256, virtiotest.DriverOptions{SlotSize: 2048})
		require.NoError(t, err)
		q, err := virtio.NewQueue(m, d.Config(features))
		require.NoError(t, err)
		if i%2 == 0 {
			r.rx, r.rxq = append(r.rx, d), append(r.rxq, q)
		} else {
			r.tx, r.txq = append(r.tx, d), append(r.txq, q)
		}
	}
	return r
}

// start starts every queue and posts n receive buffers on every receive
// queue.
func (r *mqRig) start(n int) {
	for qp := range r.rx {
		for i := 0; i < n; i++ {
			_, err := r.rx[qp].AddIn(2048)
			require.NoError(r.t, err)
		}
		r.rx[qp].Publish()
		r.port.StartQueue(2*qp, r.rxq[qp], newBell(), &counter{})
		k := newBell()
		r.txKick = append(r.txKick, k)
		r.port.StartQueue(2*qp+1, r.txq[qp], k, &counter{})
	}
}

// transmit sends frame on transmitq qp and waits until the device used it.
func (r *mqRig) transmit(qp int, frame []byte) {
	r.t.Helper()
	_, err := r.tx[qp].AddOut(make([]byte, virtio.NetHdrSize), frame)
	require.NoError(r.t, err)
	r.tx[qp].Publish()
	r.txKick[qp].Kick()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := r.tx[qp].Used(); ok {
			return
		}
		require.True(r.t, time.Now().Before(deadline), "transmitq %d: frame not used", qp)
		time.Sleep(time.Millisecond)
	}
}

// received returns every frame waiting on receiveq qp (one buffer each).
func (r *mqRig) received(qp int) [][]byte {
	var out [][]byte
	buf := make([]byte, 2048)
	for {
		e, ok := r.rx[qp].Used()
		if !ok {
			return out
		}
		n := r.rx[qp].ReadIn(uint16(e.ID), buf[:e.Len])
		out = append(out, append([]byte(nil), buf[virtio.NetHdrSize:n]...))
	}
}

// seqFrame is frame of flow (UDP source port) with seq in its payload.
func seqFrame(flow, seq int) []byte {
	b := udp4Frame(macA, macB, ipB, ipA, uint16(20000+flow), 9, 22) // 64 bytes
	binary.BigEndian.PutUint32(b[42:], uint32(seq))
	return b
}

func frameFlowSeq(b []byte) (flow, seq int) {
	return int(binary.BigEndian.Uint16(b[34:])) - 20000, int(binary.BigEndian.Uint32(b[42:]))
}

// TestGuestPortSteersByFlow: frames of one flow stay on one queue pair and
// in order; different flows use both pairs.
func TestGuestPortSteersByFlow(t *testing.T) {
	r := newMQRig(t, 2)
	r.start(200)
	const flows, per = 24, 8
	// Batches that mix every flow, as a switch hands them on.
	for seq := 0; seq < per; seq++ {
		var batch []Frame
		for fl := 0; fl < flows; fl++ {
			b := seqFrame(fl, seq)
			batch = append(batch, frameOf(b[:30], b[30:]))
		}
		r.port.Send(batch)
	}
	pairOf := map[int]int{}
	next := map[int]int{}
	var perPair [2]int
	for qp := 0; qp < 2; qp++ {
		for _, b := range r.received(qp) {
			fl, seq := frameFlowSeq(b)
			if p, ok := pairOf[fl]; ok && p != qp {
				t.Fatalf("flow %d on pairs %d and %d", fl, p, qp)
			}
			pairOf[fl] = qp
			require.Equal(t, next[fl], seq, "flow %d out of order on pair %d", fl, qp)
			next[fl]++
			perPair[qp]++
		}
	}
	require.Len(t, pairOf, flows)
	for fl := 0; fl < flows; fl++ {
		require.Equal(t, per, next[fl], "flow %d", fl)
	}
	require.NotZero(t, perPair[0], "no flow on pair 0")
	require.NotZero(t, perPair[1], "no flow on pair 1")
	require.EqualValues(t, flows*per, r.port.Stats().TxPackets.Load())
}

// TestGuestPortSteersRepliesToTransmitQueue: a flow the guest transmitted
// on transmitqX comes back on receiveqX (virtio 1.2 §5.1.6.5.6), also
// against the pair its hash alone would pick; a receive queue that stops
// loses its flows to the running one.
func TestGuestPortSteersRepliesToTransmitQueue(t *testing.T) {
	r := newMQRig(t, 2)
	r.port.SetPeer(&nullPort{})
	r.start(64)
	rp := r.port.runningRX()
	// One flow whose hash picks pair 0 and one whose hash picks pair 1;
	// the guest transmits each on the other pair.
	var flows [2]int
	found := [2]bool{}
	for fl := 0; !found[0] || !found[1]; fl++ {
		f := frameOf(seqFrame(fl, 0))
		d := r.port.steer.pairFor(&f, &rp)
		if !found[d] {
			flows[d], found[d] = fl, true
		}
	}
	for hashPair, fl := range flows {
		out := seqFrame(fl, 0) // the guest's own direction: swap
		reply := append([]byte(nil), out...)
		copy(out[0:6], reply[6:12])
		copy(out[6:12], reply[0:6])
		copy(out[26:30], reply[30:34])
		copy(out[30:34], reply[26:30])
		binary.BigEndian.PutUint16(out[34:], 9)
		binary.BigEndian.PutUint16(out[36:], uint16(20000+fl))
		r.transmit(1-hashPair, out)
	}
	for seq := 0; seq < 4; seq++ {
		r.port.Send([]Frame{frameOf(seqFrame(flows[0], seq)), frameOf(seqFrame(flows[1], seq))})
	}
	for qp := 0; qp < 2; qp++ {
		got := r.received(qp)
		require.Len(t, got, 4, "receiveq %d", qp)
		for _, b := range got {
			fl, _ := frameFlowSeq(b)
			require.Equal(t, flows[1-qp], fl, "receiveq %d", qp)
		}
	}

	// receiveq 1 stops (SET_VRING_ENABLE 0): everything goes to 0.
	r.port.StopQueue(2)
	var batch []Frame
	for fl := 0; fl < 16; fl++ {
		batch = append(batch, frameOf(seqFrame(fl, 0)))
	}
	r.port.Send(batch)
	require.Len(t, r.received(0), 16)
	require.Zero(t, r.port.Stats().Drops(DropNoQueue))
}

// TestGuestPortSteeredSendDoesNotAllocate guards the split path: a batch
// of 32 frames of 32 flows over two queue pairs, and the transmit path's
// learning.
func TestGuestPortSteeredSendDoesNotAllocate(t *testing.T) {
	r := newMQRig(t, 2)
	p := r.port
	p.SetPeer(&nullPort{})
	// No workers: drive the paths directly.
	for qp := 0; qp < 2; qp++ {
		rx := &p.pairs[qp].rx
		rx.idx, rx.q, rx.nrx, rx.offload = 2*qp, r.rxq[qp], virtio.NewNetRX(r.rxq[qp]), offloadsOf(r.rxq[qp].Features())
		p.started.Or(1 << (2 * qp))
	}
	frames := make([]Frame, 32)
	for i := range frames {
		b := seqFrame(i, i)
		frames[i] = frameOf(b[:20], b[20:])
	}
	tb := newTxBatch(r.txq[1])
	hdr := make([]byte, virtio.NetHdrSize)
	out := seqFrame(0, 0)
	run := func() {
		for qp := 0; qp < 2; qp++ {
			d := r.rx[qp]
			for uint16(d.AvailIdx()-d.LastUsed()) < 32 { // every frame may go to one pair
				if _, err := d.AddIn(2048); err != nil {
					t.Fatal(err)
				}
			}
			r.rx[qp].Publish()
		}
		for i := 0; i < 8; i++ {
			if _, err := r.tx[1].AddOut(hdr, out); err != nil {
				t.Fatal(err)
			}
		}
		r.tx[1].Publish()
		if n, err := p.txOnce(1, r.txq[1], nil, tb); n != 8 || err != nil {
			t.Fatalf("txOnce = %d, %v", n, err)
		}
		p.Send(frames)
		for qp := 0; qp < 2; qp++ {
			for ok := true; ok; _, ok = r.rx[qp].Used() {
			}
		}
		for ok := true; ok; _, ok = r.tx[1].Used() {
		}
	}
	require.Zero(t, testing.AllocsPerRun(50, run))
	require.Zero(t, p.Stats().Drops(DropNoBuffer))
	var used [2]uint64
	for qp := 0; qp < 2; qp++ {
		used[qp] = uint64(r.rx[qp].LastUsed())
	}
	require.EqualValues(t, 51*32, used[0]+used[1])
	require.NotZero(t, used[0], fmt.Sprint(used))
	require.NotZero(t, used[1], fmt.Sprint(used))
}

// TestSteeringTable: a learned flow is found with its pair until a full
// bucket gives its entry to another flow, and again once it is
// transmitted again; a flow learned on a stopped pair is not steered.
func TestSteeringTable(t *testing.T) {
	s := &steering{seed: 7}
	const all = 0b11
	// Six flows whose hashes share a bucket.
	var same []Frame
	var bucket uint32
	for fl := 0; len(same) < steerWays+2; fl++ {
		f := frameOf(seqFrame(fl, 0))
		h := flowHash(f.Segs, s.seed)
		if len(same) == 0 {
			bucket = h & (steerBuckets - 1)
		}
		if h&(steerBuckets-1) == bucket {
			same = append(same, f)
		}
	}
	hash := func(f Frame) uint32 { return flowHash(f.Segs, s.seed) }
	for i, f := range same[:steerWays] {
		s.learn(uint16(i%2), []Frame{f})
	}
	for i, f := range same[:steerWays] {
		qp, ok := s.lookup(hash(f), all)
		require.True(t, ok, "flow %d", i)
		require.EqualValues(t, i%2, qp, "flow %d", i)
	}
	// A flow moves: the entry follows.
	s.learn(1, same[:1])
	qp, ok := s.lookup(hash(same[0]), all)
	require.True(t, ok)
	require.EqualValues(t, 1, qp)
	_, ok = s.lookup(hash(same[0]), 0b01)
	require.False(t, ok, "a stopped pair is not an answer")
	// A fifth flow takes an entry; it and three of the four are found.
	s.learn(0, same[steerWays:steerWays+1])
	found := 0
	for _, f := range same[:steerWays+1] {
		if _, ok := s.lookup(hash(f), all); ok {
			found++
		}
	}
	require.Equal(t, steerWays, found)
	qp, ok = s.lookup(hash(same[steerWays]), all)
	require.True(t, ok)
	require.EqualValues(t, 0, qp)
	// Never transmitted: not found.
	_, ok = s.lookup(hash(same[steerWays+1]), all)
	require.False(t, ok)

	// Many flows over the whole table: all but a few in over-full
	// buckets are found on their pair.
	s = &steering{seed: 99}
	const flows = 256
	for fl := 0; fl < flows; fl++ {
		s.learn(uint16(fl%2), []Frame{frameOf(seqFrame(fl, 1))})
	}
	right := 0
	for fl := 0; fl < flows; fl++ {
		if qp, ok := s.lookup(hash(frameOf(seqFrame(fl, 1))), all); ok && int(qp) == fl%2 {
			right++
		}
	}
	require.GreaterOrEqual(t, right, flows-4)
}

// BenchmarkSteering is the per-frame cost of receive steering on one core,
// without goroutines or notifications: batches of 32 64-byte frames of 256
// flows written into a port's receive queues (Send), and transmitted from
// its transmit queue (txOnce, whose learning hashes every frame), with one
// queue pair (no steering) and with two (hashed: no flow learned, every
// batch split over both receive queues; learned: every flow transmitted
// on pair 0 before, no split; carried: and the frames carry the hash their
// sender's transmit worker computed, as through the switch or the loopback):
//
//	go test -run '^$' -bench Steering -benchtime 2000000x -count 5 ./datapath/
func BenchmarkSteering(b *testing.B) {
	for _, c := range []struct {
		name         string
		pairs        int
		learn, carry bool
	}{{"pairs=1", 1, false, false}, {"pairs=2/hashed", 2, false, false}, {"pairs=2/learned", 2, true, false}, {"pairs=2/carried", 2, true, true}} {
		b.Run("send/"+c.name, func(b *testing.B) { benchSteering(b, c.pairs, c.learn, c.carry, false) })
	}
	b.Run("transmit/pairs=1", func(b *testing.B) { benchSteering(b, 1, false, false, true) })
	b.Run("transmit/pairs=2", func(b *testing.B) { benchSteering(b, 2, false, false, true) })
}

func benchSteering(b *testing.B, pairs int, learn, carry, transmit bool) {
	r := newMQRig(b, pairs)
	p := r.port
	p.SetPeer(&nullPort{})
	for qp := 0; qp < pairs; qp++ {
		rx := &p.pairs[qp].rx
		rx.idx, rx.q, rx.nrx, rx.offload = 2*qp, r.rxq[qp], virtio.NewNetRX(r.rxq[qp]), offloadsOf(r.rxq[qp].Features())
		p.started.Or(1 << (2 * qp))
	}
	const batch, flows = 32, 256
	all := make([]Frame, flows)
	for i := range all {
		f := seqFrame(i, 0)
		all[i] = frameOf(f)
		if learn {
			p.steer.learn(0, all[i:i+1])
			all[i].flowSet = carry // the hash learn computed, handed on
		}
	}
	tb := newTxBatch(r.txq[0])
	hdr := make([]byte, virtio.NetHdrSize)
	b.SetBytes(64)
	b.ReportAllocs()
	b.ResetTimer()
	defer cpuPerOp(b)()
	for n := 0; n < b.N; n += batch {
		k := (n / batch * batch) % flows
		if transmit {
			for i := 0; i < batch; i++ {
				if _, err := r.tx[0].AddOut(hdr, all[k+i].Segs[0]); err != nil {
					b.Fatal(err)
				}
			}
			r.tx[0].Publish()
			if m, err := p.txOnce(0, r.txq[0], nil, tb); m != batch || err != nil {
				b.Fatalf("txOnce = %d, %v", m, err)
			}
			for ok := true; ok; _, ok = r.tx[0].Used() {
			}
			continue
		}
		for qp := 0; qp < pairs; qp++ {
			d := r.rx[qp]
			for uint16(d.AvailIdx()-d.LastUsed()) < batch {
				if _, err := d.AddIn(2048); err != nil {
					b.Fatal(err)
				}
			}
			d.Publish()
		}
		p.Send(all[k : k+batch])
		for qp := 0; qp < pairs; qp++ {
			for ok := true; ok; _, ok = r.rx[qp].Used() {
			}
		}
	}
	if d := p.Stats().Drops(DropNoBuffer); d != 0 {
		b.Fatalf("%d frames dropped", d)
	}
}

// TestGuestPortSteersLongBatch: a Send of more than MaxBatch frames is
// steered in MaxBatch pieces, none lost.
func TestGuestPortSteersLongBatch(t *testing.T) {
	r := newMQRig(t, 2)
	r.start(200)
	const n = 2*MaxBatch + 22
	batch := make([]Frame, n)
	for i := range batch {
		batch[i] = frameOf(seqFrame(i, i))
	}
	r.port.Send(batch)
	got := [2]int{len(r.received(0)), len(r.received(1))}
	require.Equal(t, n, got[0]+got[1], "%v", got)
	require.NotZero(t, got[0])
	require.NotZero(t, got[1])
	require.EqualValues(t, n, r.port.Stats().TxPackets.Load())
}

// TestSteeringCarriesHash: learn leaves each frame's hash on it, and a port
// keyed like the sender reuses it; one keyed otherwise does not.
func TestSteeringCarriesHash(t *testing.T) {
	s := newSteering()
	fs := []Frame{frameOf(seqFrame(3, 0))}
	s.learn(1, fs)
	require.True(t, fs[0].flowSet)
	require.Equal(t, flowHash(fs[0].Segs, flowSeed), fs[0].flow)
	require.Equal(t, fs[0].flow, newSteering().hashOf(&fs[0]))
	other := &steering{seed: flowSeed + 1}
	require.Equal(t, flowHash(fs[0].Segs, other.seed), other.hashOf(&fs[0]))
	// A carried hash is what decides: a frame carrying flow 3's hash goes
	// where flow 3 was learned, whatever its bytes.
	f := frameOf(seqFrame(4, 0))
	f.flow, f.flowSet = fs[0].flow, true
	rp := runningPairs{n: 2, mask: 3, list: [MaxQueuePairs]uint8{0, 1}}
	require.EqualValues(t, 1, s.pairFor(&f, &rp))
}

// TestGuestPortQueueStats: each queue pair counts the frames of its own
// transmit and receive queue, and the pairs add up to the port's counters.
func TestGuestPortQueueStats(t *testing.T) {
	r := newMQRig(t, 2)
	r.port.SetPeer(&nullPort{})
	r.start(200)
	require.Equal(t, 2, r.port.QueuePairs())
	require.Nil(t, r.port.QueueStats(-1))
	require.Nil(t, r.port.QueueStats(2))

	sent := [2]int{3, 5}
	for qp, n := range sent {
		for i := 0; i < n; i++ {
			r.transmit(qp, seqFrame(100+qp, i))
		}
	}
	// Replies to those two flows come back on the pair each was sent
	// on; 16 more flows spread by hash.
	var batch []Frame
	for fl := 0; fl < 16; fl++ {
		batch = append(batch, frameOf(seqFrame(fl, 0)))
	}
	r.port.Send(batch)
	var got [2]int
	for qp := range got {
		got[qp] = len(r.received(qp))
	}
	require.Equal(t, 16, got[0]+got[1])
	require.NotZero(t, got[0], "no flow on pair 0")
	require.NotZero(t, got[1], "no flow on pair 1")

	var sum QueueStats
	for qp := 0; qp < 2; qp++ {
		qs := r.port.QueueStats(qp)
		require.EqualValues(t, sent[qp], qs.RxPackets.Load(), "pair %d rx", qp)
		require.EqualValues(t, sent[qp]*64, qs.RxBytes.Load(), "pair %d rx bytes", qp)
		require.EqualValues(t, got[qp], qs.TxPackets.Load(), "pair %d tx", qp)
		require.EqualValues(t, got[qp]*64, qs.TxBytes.Load(), "pair %d tx bytes", qp)
		sum.RxPackets.Add(qs.RxPackets.Load())
		sum.RxBytes.Add(qs.RxBytes.Load())
		sum.TxPackets.Add(qs.TxPackets.Load())
		sum.TxBytes.Add(qs.TxBytes.Load())
	}
	st := r.port.Stats()
	require.Equal(t, st.RxPackets.Load(), sum.RxPackets.Load())
	require.Equal(t, st.RxBytes.Load(), sum.RxBytes.Load())
	require.Equal(t, st.TxPackets.Load(), sum.TxPackets.Load())
	require.Equal(t, st.TxBytes.Load(), sum.TxBytes.Load())
}
