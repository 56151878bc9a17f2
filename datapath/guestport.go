package datapath

import (
	"errors"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// MaxQueuePairs is the largest number of queue pairs a GuestPort serves.
const MaxQueuePairs = 16

// maxFrameLen bounds a transmitted frame: a 64 KiB GSO super-frame plus an
// Ethernet header with one VLAN tag.
const maxFrameLen = 65535 + 18

// minFrameLen is an Ethernet header (virtio 1.2 §5.1.6.2 leaves frame
// validity to the device; a frame shorter than its L2 header is dropped).
const minFrameLen = 14

// GuestPortOptions configures a GuestPort.
type GuestPortOptions struct {
	// Name identifies the port in logs and statistics ("guest0").
	Name string
	// QueuePairs is the number of queue pairs offered (1..MaxQueuePairs).
	QueuePairs int
	// Source, if set, feeds every receive queue from a worker of its own
	// (the "source" uplink).
	Source FrameSource
	// Poll makes the workers busy-poll their rings instead of sleeping on
	// kicks (benchmarks).
	Poll bool
	// Backlog is how many bytes of frames the port's receive queues hold,
	// copied, while the guest's ring is full, to write them as it adds
	// buffers (backlog.go), split evenly between the queue pairs; 0 drops a
	// frame that finds no buffer at once. Not with Source, whose workers
	// wait for buffers themselves.
	Backlog int
	// Logger receives the port's log records; nil means slog.Default.
	Logger *slog.Logger
}

// GuestPort is the device side of one guest's virtio-net device: it works
// the guest's virtqueues in place. Frames the guest transmits go to the
// port's peer (SetPeer); frames sent to the port (Send) are written into the
// guest's receive queues. GuestPort implements vhostuser.Device.
type GuestPort struct {
	opt   GuestPortOptions
	log   *slog.Logger
	stats Stats
	peer  atomic.Pointer[Port]
	pairs []pair
	steer *steering // receive steering (steer.go); nil with one queue pair

	// mu serialises StartQueue/StopQueue/Close.
	mu     sync.Mutex
	closed bool

	faultLogged atomic.Bool // a guest memory fault was logged (once per port)
	// started has bit idx set while queue idx is started (Running reads
	// it without p.mu: the switch asks under its own lock).
	started atomic.Uint32

	// Reading in place with several queue pairs (inplace.go): reserving
	// counts open reservations; while there are, steered is 1 + the pair
	// the last one-frame Send was steered to, so that a reader whose frame
	// went to another pair reserves there next time.
	reserving atomic.Int32
	steered   atomic.Uint32
}

type pair struct {
	rx    rxQueue
	tx    *worker
	stats QueueStats
}

// rxQueue is a receive queue: everything in it is guarded by mu.
type rxQueue struct {
	mu      sync.Mutex
	idx     int // the virtqueue index (2*queue pair)
	q       *virtio.Queue
	nrx     *virtio.NetRX
	kick    virtio.Doorbell
	call    virtio.Notifier
	offload offloads
	broken  bool
	stats   *QueueStats // its pair's counters
	worker  *worker     // the FrameSource or drain worker, if any
	held    *backlog    // frames waiting for buffers (backlog.go); nil without
	// heldWake wakes the drain worker when the backlog gets its first
	// frame (capacity 1).
	heldWake chan struct{}
	reserved *Reservation // receive buffers an uplink reader reads into (inplace.go)
	// resOpen counts reservations between Reserve and End: the frame's
	// bytes are in this queue's buffers until End, and StopQueue waits
	// for them (the session unmaps the memory after it).
	resOpen sync.WaitGroup
	// callPending: frames were published without asking whether the guest
	// wants a call (Reservation.Lazy); FlushReceive asks.
	callPending bool
	lazyBufs    int // buffers used by frames published without a call
	scratch     [csumScratch]byte
	segs        [][]byte
	part        []Frame                   // a batch's frames for this queue (steer.go), cap MaxBatch
	plain       [MaxBatch]virtio.PlainBuf // deliver's batch of one-buffer chains
	// The queue's position after deliver's last Publish, and how many of
	// the frames deliver was given it had consumed by then: a fault
	// rewinds to it (deliverGuarded).
	mark     virtio.Mark
	markDone int
}

type worker struct {
	stop atomic.Bool
	kick virtio.Doorbell
	done chan struct{}
	quit chan struct{} // closed by halt, for a worker waiting on a channel
	idle virtio.Idle   // spin, re-arm, sleep (virtio/idle.go)
}

// idleSpin is how long a worker whose ring ran empty yields and looks again
// before it re-enables kicks and sleeps (virtio.Idle). A frontend that
// keeps sending refills the ring well within it, so under load the
// notifications stay off; one frame in flight through the switch (a
// ping-pong between two guests: 10-20 us a round trip on a 2-vCPU host)
// finds both guests' workers still awake; and an idle port sleeps at 0 %
// CPU 50 us after its last frame.
var idleSpin = 50 * time.Microsecond

// NewGuestPort returns a port with no running queues.
func NewGuestPort(opt GuestPortOptions) (*GuestPort, error) {
	if opt.QueuePairs < 1 || opt.QueuePairs > MaxQueuePairs {
		return nil, errors.New("datapath: queue pairs must be between 1 and 16")
	}
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	if opt.Backlog < 0 {
		return nil, errors.New("datapath: a receive backlog cannot be negative")
	}
	p := &GuestPort{opt: opt, log: log.With("port", opt.Name), pairs: make([]pair, opt.QueuePairs)}
	for i := range p.pairs {
		r := &p.pairs[i].rx
		r.segs = make([][]byte, 0, 8)
		r.stats = &p.pairs[i].stats
		if opt.Backlog > 0 && opt.Source == nil {
			r.held = &backlog{size: opt.Backlog / opt.QueuePairs}
			r.heldWake = make(chan struct{}, 1)
		}
	}
	if opt.QueuePairs > 1 {
		p.steer = newSteering()
		for i := range p.pairs {
			p.pairs[i].rx.part = make([]Frame, 0, MaxBatch)
		}
	}
	return p, nil
}

// Name returns the port's name.
func (p *GuestPort) Name() string { return p.opt.Name }

// Stats returns the port's counters.
func (p *GuestPort) Stats() *Stats { return &p.stats }

// SetPeer sets where the guest's transmitted frames go; nil drops them.
func (p *GuestPort) SetPeer(peer Port) {
	if peer == nil {
		p.peer.Store(nil)
		return
	}
	p.peer.Store(&peer)
}

// StartQueue starts serving queue idx: an even idx is receiveq idx/2, an odd
// one transmitq idx/2 (virtio 1.2 §5.1.2). A queue that is already running is
// stopped first.
func (p *GuestPort) StartQueue(idx int, q *virtio.Queue, kick virtio.Doorbell, call virtio.Notifier) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || idx < 0 || idx/2 >= len(p.pairs) || q == nil {
		p.log.Warn("start of a queue the port does not serve ignored", "queue", idx)
		return
	}
	p.stopLocked(idx)
	p.started.Or(1 << idx)
	pr := &p.pairs[idx/2]
	if idx%2 == 1 {
		pr.tx = p.spawn(kick, func(w *worker) { p.runTX(uint16(idx/2), q, kick, call, w) })
		return
	}
	r := &pr.rx
	// The port waits for a receive queue's kick only while it has frames
	// for a full ring: a Source worker, or the drain worker while frames
	// are held (backlog.go), turns kicks on when it sleeps (virtio.Idle).
	// Otherwise it asks the driver not to kick when it adds buffers
	// (virtio 1.2 §2.7.10: VIRTQ_USED_F_NO_NOTIFY; with VIRTIO_F_EVENT_IDX
	// an avail_event Pop no longer moves along, §2.7.7.2; packed rings:
	// RING_EVENT_FLAGS_DISABLE, §2.8.10). Without it a driver kicks every
	// time it refills a ring the port had emptied (always, without
	// EVENT_IDX): a VM exit in the guest each time, for a kick nobody
	// reads. Before r.mu: a fault here leaves no lock held.
	q.DisableNotify()
	r.mu.Lock()
	r.idx, r.q, r.kick, r.call, r.broken = idx, q, kick, call, false
	r.nrx = virtio.NewNetRX(q)
	r.offload = offloadsOf(q.Features())
	r.mu.Unlock()
	switch {
	case p.opt.Source != nil:
		r.worker = p.spawn(kick, func(w *worker) { p.runSource(uint16(idx/2), r, w) })
	case r.held != nil:
		r.worker = p.spawn(kick, func(w *worker) { p.runHeld(r, w) })
	}
}

// StopQueue stops serving queue idx; it returns when no goroutine of the
// port touches the queue any more.
func (p *GuestPort) StopQueue(idx int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if idx < 0 || idx/2 >= len(p.pairs) {
		return
	}
	p.stopLocked(idx)
}

func (p *GuestPort) stopLocked(idx int) {
	defer p.started.And(^uint32(1 << idx))
	pr := &p.pairs[idx/2]
	if idx%2 == 1 {
		pr.tx.halt()
		pr.tx = nil
		return
	}
	r := &pr.rx
	r.worker.halt()
	r.worker = nil
	r.mu.Lock()
	r.q, r.nrx, r.kick, r.call = nil, nil, nil, nil
	r.reserved = nil
	if r.held != nil {
		p.stats.Drop(DropNoQueue, uint64(r.held.release()))
	}
	r.mu.Unlock()
	r.resOpen.Wait() // a frame read into the buffers is through
}

// SetLog is part of vhostuser.Device. Every guest write of the port goes
// through its virtio.Queues, whose dirty log the session sets, so the port
// has nothing else to log.
func (p *GuestPort) SetLog(*virtio.DirtyLog) {}

// Close stops every queue; the port takes no new ones.
func (p *GuestPort) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 0; i < 2*len(p.pairs); i++ {
		p.stopLocked(i)
	}
	p.closed = true
}

func (p *GuestPort) spawn(kick virtio.Doorbell, run func(*worker)) *worker {
	w := &worker{kick: kick, done: make(chan struct{}), quit: make(chan struct{}), idle: virtio.Idle{Spin: idleSpin, Poll: p.opt.Poll}}
	go func() {
		defer close(w.done)
		run(w)
	}()
	return w
}

// halt stops w and waits for it; a nil worker is already stopped.
func (w *worker) halt() {
	if w == nil {
		return
	}
	w.stop.Store(true)
	close(w.quit)
	if w.kick != nil {
		w.kick.Interrupt()
	}
	<-w.done
}

// wait runs the worker's idle step on q (virtio.Idle: spin, re-arm
// notifications, sleep on the kick). It reports false when the worker must
// end.
func (p *GuestPort) wait(q *virtio.Queue, w *worker) bool {
	return p.kickResult(w.idle.Wait(q, w.kick, nil), w)
}

// txBatch is a transmit worker's reusable per-batch state.
type txBatch struct {
	chains [MaxBatch]virtio.Chain
	frames [MaxBatch]Frame
	segs   [MaxBatch][][]byte
	hdrLen int
	off    offloads
	sink   byte // transmit's read-ahead stores what it read here
	// caughtUp: the last poll of the queue found it empty, so the
	// driver, not this worker, is the slower side (transmit then reads
	// the frames in their turn, without the read-ahead).
	caughtUp bool
}

func (p *GuestPort) runTX(qp uint16, q *virtio.Queue, kick virtio.Doorbell, call virtio.Notifier, w *worker) {
	// Guest memory can fault under the worker (virtio/fault.go): a fault
	// becomes a panic, recovered by faultTX. The goroutine is the worker's
	// own, so the setting is not restored.
	debug.SetPanicOnFault(true)
	defer p.faultTX(int(qp)*2+1, q)
	b := newTxBatch(q)
	q.DisableNotify()
	for !w.stop.Load() {
		n, err := p.txOnce(qp, q, call, b)
		if err != nil {
			p.broken("transmit", int(qp)*2+1, err)
			return
		}
		if n > 0 {
			w.idle.Busy()
		} else if !p.wait(q, w) {
			return
		}
	}
}

// faultTX is the deferred end of a transmit worker: a fault in the guest's
// memory (the frontend shrank the file behind it), hit by the worker or by
// what it handed its frames to on the way out (the switch, the router, the
// gateway), breaks the queue; the session that mapped the memory was told
// by virtio.HandleFault and ends. Faults in a receiving guest's memory do
// not get here: Send contains them (deliverGuarded). Any other panic goes
// on.
func (p *GuestPort) faultTX(idx int, q *virtio.Queue) {
	if f := virtio.HandleFault(recover()); f != nil {
		p.faulted("transmit", idx, q, f)
	}
}

// faulted breaks q after a fault in guest memory and counts it. The
// session that mapped the memory ends and logs the fault (one line); the
// port's own record of its first fault is a debug one.
func (p *GuestPort) faulted(dir string, idx int, q *virtio.Queue, f *virtio.Fault) {
	_ = q.Break(f) // signals the ring's error fd (SET_VRING_ERR)
	p.stats.Drop(DropQueueBroken, 1)
	if !p.faultLogged.Swap(true) {
		p.log.Debug("guest memory fault; queue stopped", "direction", dir, "queue", idx, "err", f)
	}
}

// txOnce pops up to MaxBatch chains from q, hands their frames to the peer,
// returns the chains to the guest with one used-ring publication and at most
// one notification, and returns how many chains it handled.
func (p *GuestPort) txOnce(qp uint16, q *virtio.Queue, call virtio.Notifier, b *txBatch) (int, error) {
	// PopN and PushN: Pop and Push over the batch, with the common
	// one-buffer chains read, and every used element stored, in one loop
	// each.
	n, err := q.PopN(b.chains[:])
	if err != nil {
		return n, err
	}
	if n == 0 {
		b.caughtUp = true
		return 0, nil
	}
	p.transmit(qp, b, n)
	b.caughtUp = false
	if err := q.PushN(b.chains[:n], 0); err != nil {
		return n, err
	}
	q.Publish()
	if q.NeedNotify() && call != nil {
		_ = call.Notify()
	}
	return n, nil
}

func newTxBatch(q *virtio.Queue) *txBatch {
	b := &txBatch{hdrLen: virtio.NetHdrLen(q.Features()), off: offloadsOf(q.Features())}
	for i := range b.segs {
		b.segs[i] = make([][]byte, 0, 4)
	}
	return b
}

// transmit turns the n popped chains of b into frames and hands them to the
// peer.
func (p *GuestPort) transmit(qp uint16, b *txBatch, n int) {
	nf, bytes, bad := 0, 0, 0
	// When the worker is behind (the poll before this batch found
	// chains waiting), touch every frame's first lines (its virtio-net
	// header, and the first bytes of the frame, its MACs: with the header
	// at the end of a line, as virtio_user places it before the mbuf's
	// data, that is the next line) in one loop first, so that the misses
	// on them overlap rather than come one txFrame or one peer's read at
	// a time (perf, loop-64: 64% of Loopback.Send at its first read of
	// the frame). Read only: these are the device-readable buffers.
	//
	// When it has caught up with the driver (the poll before found the
	// ring empty), the driver is the slower side, and the read-ahead
	// slowed it down further: a whole batch of lines it has just written
	// requested at once, while it writes the next frames. On the test VM
	// with its two vCPUs far apart (issue 14; bench/alternate.sh: one
	// virtio_user frontend, the backends taking turns on it), a sink that
	// reads no frame at all took 18-25 Mpps from virtio_user where the
	// one behind the read-ahead took 10-13 (packed rings, a temporary
	// build). Without the read-ahead when caught up, f2b-copy-64-packed
	// went from 0.62-0.84x DPDK's net_vhost to 0.98-1.04x in the same
	// passes far apart (1.00x -> 1.06x close), f2b-copy-64 from 0.98-1.06x
	// to 1.01-1.12x; loop-64 (the backend the slower side, rarely caught
	// up) 0.95-1.01x and loop-64-packed 0.92-1.15x of the build before.
	var sink byte
	for i := 0; i < n && !b.caughtUp; i++ {
		if out := b.chains[i].Out; len(out) > 0 {
			if buf := out[0].Buf; len(buf) > b.hdrLen {
				sink += buf[0] + buf[b.hdrLen]
			} else if len(buf) > 0 {
				sink += buf[0]
			}
		}
	}
	b.sink = sink
	for i := 0; i < n; i++ {
		f := &b.frames[nf]
		if !txFrame(&b.chains[i], b.hdrLen, b.off, f, &b.segs[nf]) {
			bad++
			continue
		}
		f.Queue = qp
		bytes += f.Len
		nf++
	}
	p.stats.Drop(DropMalformed, uint64(bad))
	if nf == 0 {
		return
	}
	p.stats.RxPackets.Add(uint64(nf))
	p.stats.RxBytes.Add(uint64(bytes))
	qs := &p.pairs[int(qp)%len(p.pairs)].stats
	qs.RxPackets.Add(uint64(nf))
	qs.RxBytes.Add(uint64(bytes))
	if p.steer != nil {
		p.steer.learn(qp, b.frames[:nf])
	}
	if peer := p.peer.Load(); peer != nil {
		(*peer).Send(b.frames[:nf])
	}
}

// txFrame reads a transmitted chain's virtio-net header once into backend
// memory, validates it, and points f at the frame bytes that follow it. It
// reports false for a chain that is not a valid frame.
func txFrame(c *virtio.Chain, hdrLen int, off offloads, f *Frame, segs *[][]byte) bool {
	total := int(c.OutLen)
	if total < hdrLen+minFrameLen || total > hdrLen+maxFrameLen {
		return false
	}
	if len(c.Out) == 1 && hdrLen == virtio.NetHdrSize {
		// The common chain, one buffer: decode the header straight from
		// it (each byte read once into f.Hdr, which alone is validated)
		// instead of copying it first.
		buf := c.Out[0].Buf
		f.Hdr.Decode(buf)
		*segs = append((*segs)[:0], buf[hdrLen:])
		f.Segs = *segs
	} else {
		txSegs(c, hdrLen, f, segs)
	}
	f.Hdr.NumBuffers = 0
	f.flowSet = false // learn sets it
	f.Len = total - hdrLen
	if f.Hdr.Flags == 0 && f.Hdr.GSOType == virtio.NetHdrGSONone {
		// No offload asked for (most frames): validTX would say yes, and
		// is a call.
		return true
	}
	return off.validTX(&f.Hdr, f.Len)
}

// txSegs is txFrame for any chain: it gathers the header from the first
// segments into a copy and decodes it into f.Hdr, and points f.Segs at the
// frame bytes after it.
func txSegs(c *virtio.Chain, hdrLen int, f *Frame, segs *[][]byte) {
	var raw [virtio.NetHdrSize]byte
	skip := hdrLen
	s := (*segs)[:0]
	for _, seg := range c.Out {
		buf := seg.Buf
		if skip > 0 {
			k := copy(raw[hdrLen-skip:hdrLen], buf)
			skip -= k
			buf = buf[k:]
		}
		if len(buf) > 0 {
			s = append(s, buf)
		}
	}
	*segs = s
	f.Hdr.Decode(raw[:])
	f.Segs = s
}

// Send writes frames into the guest's receive queues: with one queue pair
// into its receive queue, with more into the receive queue of each frame's
// flow (steer.go). Frames that do not fit are held in the queue's backlog
// while it has room (GuestPortOptions.Backlog, backlog.go), else dropped
// and counted.
func (p *GuestPort) Send(frames []Frame) {
	if len(frames) == 0 {
		return
	}
	if p.steer != nil {
		p.sendSteered(frames)
		return
	}
	p.sendTo(0, frames)
}

// deliverGuarded is deliver with faults contained. It runs on whatever
// goroutine sends to the port: another guest's transmit worker, a TAP
// reader, the gateway. The frames it copies are in the sender's memory
// (another guest's, for a frame between guests) and it writes into this
// guest's: a fault in either (a frontend that shrank its memory file,
// virtio/fault.go) becomes a panic here, for this call only, and is
// recovered before it reaches the caller:
//   - in this guest's memory (or dirty log): the receive queue is broken
//     and every frame dropped (drop_queue_broken);
//   - in the sender's memory: the queue is rewound to where it was (a
//     half-written frame is never published), and the frames are dropped
//     (drop_malformed). The sender's session was told by
//     virtio.HandleFault and ends; its own worker finds out on its next
//     access.
//
// Frames deliver published before the fault (midPublish) stay delivered:
// the rewind goes back to its last Publish, and they count as consumed.
func (p *GuestPort) deliverGuarded(r *rxQueue, frames []Frame) (n int, reason DropReason) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	r.mark, r.markDone = r.q.Mark(), 0
	defer func() {
		if f := virtio.HandleFault(recover()); f != nil {
			n, reason = p.rxFault(r, f)
		}
	}()
	return p.deliver(r, frames)
}

// rxFault puts r (locked) straight after a fault in deliver; see
// deliverGuarded.
func (p *GuestPort) rxFault(r *rxQueue, f *virtio.Fault) (int, DropReason) {
	if !r.q.Faulted(f) {
		r.q.Rewind(r.mark)
		return r.markDone, DropMalformed
	}
	r.broken = true
	p.faulted("receive", r.idx, r.q, f)
	return r.markDone, DropQueueBroken
}

// rxFor returns the running receive queue for queue pair qp, locked, or
// nil.
func (p *GuestPort) rxFor(qp uint16) *rxQueue {
	r := &p.pairs[int(qp)%len(p.pairs)].rx
	r.mu.Lock()
	if r.q != nil && !r.broken {
		return r
	}
	r.mu.Unlock()
	for i := range p.pairs {
		r := &p.pairs[i].rx
		r.mu.Lock()
		if r.q != nil && !r.broken {
			return r
		}
		r.mu.Unlock()
	}
	return nil
}

// midPublish is how many bytes of frames deliver writes before it
// publishes them, and notifies the driver if it asks, in the middle of a
// batch. A batch of 64 KiB GSO frames from another guest is up to 4 MiB:
// published only at its end, the receiving driver, asleep, was woken only
// after the ~300 us of copying, and its buffers came back (and a TCP
// sender's next frames) that much later. The kernel's vhost-net does the
// same every 64 buffers (drivers/vhost/net.c handle_rx: "if
// (nvq->done_idx > VHOST_NET_BATCH) vhost_net_signal_used(nvq)"), 256 KiB
// of 4 KiB buffers. With 1024-entry rings between two Go frontends
// (BenchmarkGuestToGuestGSO) that wake-up was the bound: 49-53 Gbit/s
// before, 66-93 with it (5 pairs; issue 14, README Performance);
// publishing without the call measured as before: the early wake-up is
// the gain. Batches of one-buffer frames (at most 64 of 4 KiB) never reach
// it.
const midPublish = 256 << 10

// deliver writes frames into r (locked) until one does not fit; it
// publishes and notifies at the end, and every midPublish bytes before
// (r.mark then moves). It returns how many frames it consumed (written,
// or dropped alone as malformed or too big) and why it stopped early.
func (p *GuestPort) deliver(r *rxQueue, frames []Frame) (int, DropReason) {
	n, bytes, bad, tooBig := 0, 0, 0, 0
	reason := DropNoBuffer
	i := 0
	lazy := false
	if res := r.reserved; res != nil && len(frames) > 0 {
		// An uplink reader's frame in place comes first (inplace.go);
		// nothing else is written while buffers are reserved.
		if !p.deliverReserved(r, &frames[0]) {
			return 0, DropNoBuffer
		}
		n, bytes, i = 1, frames[0].Len, 1
		if res.Lazy && len(frames) == 1 {
			// The call waits for the reader's FlushReceive, but not
			// past a quarter of the ring: the guest would starve.
			r.lazyBufs += r.nrx.Committed()
			lazy = r.lazyBufs < int(r.q.Size())/4
		}
	}
	// noFit: the length of a plain frame that did not fit the single
	// buffer PeekPlain gave it; longer ones are not peeked for again.
	noFit := math.MaxInt
	for i < len(frames) {
		if bytes >= midPublish && !lazy {
			p.settle(r, false, n, bytes, bad, tooBig)
			n, bytes, bad, tooBig = 0, 0, 0, 0
			r.mark, r.markDone = r.q.Mark(), i
		}
		// Frames without offload metadata (most) that fit the next
		// chains' single buffers go in a batch (virtio.NetRX.PeekPlain:
		// the same bytes and used elements as WritePlain, but with every
		// descriptor read first and then one loop of copies). Only as
		// many chains are peeked as frames that may take that path
		// follow: PeekPlain reads each chain's descriptor and
		// prefetches its buffer, and before a GSO frame (which never
		// does) it peeked all the same, once per frame of the batch
		// (issue 14: 9 % of vhost-arcnet's CPU in a 64 KiB GSO stream
		// between two guests).
		run := 0
		for run < len(frames)-i && run < len(r.plain) && plainCandidate(&frames[i+run], noFit, r.offload.guestCsum) {
			run++
		}
		k := 0
		if run > 0 {
			k = r.nrx.PeekPlain(r.plain[:run])
		}
		if k > 0 {
			j := 0
			for ; j < k; j++ {
				f := &frames[i+j]
				size := 0
				for _, s := range f.Segs {
					size += len(s)
				}
				var dst []byte
				var ok bool
				if f.Hdr.Flags == 0 {
					dst, ok = r.nrx.PlainFrame(&r.plain[j], size)
				} else {
					dst, ok = r.nrx.PlainFrameHdr(&r.plain[j], &f.Hdr, size)
				}
				if !ok {
					if j == 0 {
						noFit = f.Len
					}
					break
				}
				off := 0
				for _, s := range f.Segs {
					off += copy(dst[off:], s)
				}
				bytes += f.Len
			}
			if j > 0 {
				r.nrx.CommitPlain(r.plain[:j])
				n += j
				i += j
				continue
			}
		}
		if r.nrx.Mergeable() {
			// Frames over several buffers (a GSO frame, a frame longer
			// than one buffer), and any after them, in one batch of
			// buffers too (virtio.NetRX.MergeFrame).
			if m, b := r.mergeRun(frames[i:]); m > 0 {
				n += m
				bytes += b
				i += m
				continue
			}
		}
		f := &frames[i]
		i++
		// Most frames carry no offload metadata: skip prepare and its
		// header copy for them (it showed as a store-forwarding stall at
		// 64 B in profiles); their header is zeros (WritePlain).
		var ok bool
		var err error
		if f.Hdr.Flags != 0 || f.Hdr.GSOType != virtio.NetHdrGSONone {
			hdr, segs, good := r.prepare(f)
			if !good {
				bad++ // a frame this guest cannot take is dropped alone
				continue
			}
			ok, err = r.nrx.Write(hdr, segs)
		} else {
			ok, err = r.nrx.WritePlain(f.Segs)
		}
		if err != nil {
			r.broken = true
			p.broken("receive", r.idx, err)
			reason = DropQueueBroken
			i--
			break
		}
		if !ok {
			if r.nrx.TooBig() {
				tooBig++ // a smaller frame after it may still fit
				continue
			}
			i--
			break
		}
		n++
		bytes += f.Len
	}
	p.settle(r, lazy, n, bytes, bad, tooBig)
	return i, reason
}

// settle publishes the n frames (bytes long) deliver wrote since it last
// published, notifies the driver if it asks (not when lazy: the uplink
// reader's FlushReceive decides), and counts them and the frames dropped
// alone (bad, tooBig).
func (p *GuestPort) settle(r *rxQueue, lazy bool, n, bytes, bad, tooBig int) {
	if n > 0 {
		r.q.Publish()
		switch {
		case lazy:
			r.callPending = true // the reader's FlushReceive decides
		case r.q.NeedNotify() && r.call != nil:
			_ = r.call.Notify()
			fallthrough
		default:
			// NeedNotify looked at every used entry.
			r.callPending, r.lazyBufs = false, 0
		}
		p.stats.TxPackets.Add(uint64(n))
		p.stats.TxBytes.Add(uint64(bytes))
		r.stats.TxPackets.Add(uint64(n))
		r.stats.TxBytes.Add(uint64(bytes))
	}
	p.stats.Drop(DropMalformed, uint64(bad))
	p.stats.Drop(DropTooBig, uint64(tooBig))
}

// mergeRun writes the leading frames of frames that the next one-buffer
// chains hold (virtio.NetRX.PeekPlain) across as many of them as each
// needs (virtio.NetRX.MergeFrame), and consumes the chains used in one
// virtio.NetRX.CommitPlain: the bytes and used elements of a Write per
// frame, without its pop, walk and push per chain. It stops at the first
// frame that does not fit what was peeked or that prepare refuses (deliver
// then decides on it, as for any frame) and returns how many frames it
// wrote and their bytes. The guest merges receive buffers.
func (r *rxQueue) mergeRun(frames []Frame) (n, bytes int) {
	k := r.nrx.PeekPlain(r.plain[:])
	used := 0
	for n < len(frames) && used < k {
		f := &frames[n]
		segs := f.Segs
		var hdr *virtio.NetHdr // nil: no offload metadata, WritePlain's header
		h := f.Hdr
		if h.Flags != 0 || h.GSOType != virtio.NetHdrGSONone {
			var good bool
			if h, segs, good = r.prepare(f); !good {
				break
			}
			hdr = &h
		}
		u := r.nrx.MergeFrame(r.plain[used:k], hdr, segs)
		if u == 0 {
			break
		}
		used += u
		bytes += f.Len
		n++
	}
	if n > 0 {
		r.nrx.CommitPlain(r.plain[:used])
	}
	return n, bytes
}

// plainCandidate reports whether f may go through PeekPlain's batch: no
// segmentation, no offload metadata or metadata the guest takes as it is
// (hdrAsIs: it negotiated GUEST_CSUM, so prepare would pass the header
// through, rxQueue.prepare), and shorter than a frame that did not fit a
// single buffer in this delivery (noFit; the guest's buffers are of one
// size, as a rule, and a mergeable one takes the frame in several).
// Linux guests send every TCP segment with a partial checksum: their ACKs
// take this batch too.
func plainCandidate(f *Frame, noFit int, hdrAsIs bool) bool {
	return f.Hdr.GSOType == virtio.NetHdrGSONone && (f.Hdr.Flags == 0 || hdrAsIs) && f.Len < noFit
}

// broken logs, once per queue start, that the guest broke a queue.
func (p *GuestPort) broken(dir string, idx int, err error) {
	p.stats.Drop(DropQueueBroken, 1)
	p.log.Warn("guest broke a virtqueue; queue stopped until the frontend restarts it",
		"direction", dir, "queue", idx, "err", err)
}

// runSource feeds receive queue pair qp from the port's FrameSource as fast
// as the guest gives buffers.
func (p *GuestPort) runSource(qp uint16, r *rxQueue, w *worker) {
	// Faults in guest memory are recovered by deliverGuarded and
	// waitLocked.
	debug.SetPanicOnFault(true)
	var frames [MaxBatch]Frame
	for !w.stop.Load() {
		n := p.opt.Source.Fill(qp, frames[:])
		pending := frames[:n]
		for len(pending) > 0 && !w.stop.Load() {
			r.mu.Lock()
			if r.q == nil || r.broken {
				r.mu.Unlock()
				return
			}
			k, _ := p.deliverGuarded(r, pending)
			if k > 0 {
				w.idle.Busy()
			}
			pending = pending[k:]
			if len(pending) == 0 {
				r.mu.Unlock()
				break
			}
			// The ring is full: sleep until the guest adds buffers.
			if !p.waitLocked(r, w) {
				return
			}
		}
	}
}

// waitLocked runs the worker's idle step on r's queue (virtio.Idle), with r
// locked on entry and unlocked on return. It reports false when the worker
// must end.
//
// Idle.Wait touches guest memory (re-arming notifications) only with r.mu
// held, so a fault there, recovered here, leaves r locked: the queue is
// broken, r unlocked, and the worker ends.
func (p *GuestPort) waitLocked(r *rxQueue, w *worker) (more bool) {
	defer func() {
		if f := virtio.HandleFault(recover()); f != nil {
			r.broken = true
			p.faulted("receive", r.idx, r.q, f)
			r.mu.Unlock()
			more = false
		}
	}()
	err := w.idle.Wait(r.q, w.kick, &r.mu)
	r.mu.Unlock()
	return p.kickResult(err, w)
}

// kickResult turns the idle step's result into whether the worker goes on.
func (p *GuestPort) kickResult(err error, w *worker) bool {
	switch {
	case err == nil:
		return !w.stop.Load()
	case errors.Is(err, virtio.ErrInterrupted):
		return !w.stop.Load()
	case errors.Is(err, virtio.ErrNoDoorbell):
		return false
	default:
		p.log.Warn("queue kick failed; queue stopped", "err", err)
		return false
	}
}
