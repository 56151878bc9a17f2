package vhostuser_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// echoDevice is a vhostuser.Device for tests: every frame the guest
// transmits on transmitq k comes back on receiveq k (virtio.NetRX), with the
// transmitted virtio-net header's offload fields.
type echoDevice struct {
	info  vhostuser.SessionInfo
	mu    sync.Mutex
	pairs map[int]*echoPair

	tx, rx, drops atomic.Uint64
	starts, stops atomic.Uint64
	logs          atomic.Uint64 // SetLog calls
	logOn         atomic.Bool
	mtu           atomic.Uint32
	rarp          atomic.Pointer[[6]byte]
	closed        atomic.Bool
	broken        atomic.Pointer[error]
}

type echoPair struct {
	mu     sync.Mutex // guards the receive side
	rx     *virtio.Queue
	nrx    *virtio.NetRX
	rxCall virtio.Notifier
	tx     *echoWorker
}

type echoWorker struct {
	stop atomic.Bool
	kick virtio.Doorbell
	done chan struct{}
}

func newEchoDevice(info vhostuser.SessionInfo) *echoDevice {
	return &echoDevice{info: info, pairs: make(map[int]*echoPair)}
}

func (d *echoDevice) pair(k int) *echoPair {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pairs[k]
	if p == nil {
		p = new(echoPair)
		d.pairs[k] = p
	}
	return p
}

func (d *echoDevice) StartQueue(idx int, q *virtio.Queue, kick virtio.Doorbell, call virtio.Notifier) {
	d.starts.Add(1)
	p := d.pair(idx / 2)
	if idx%2 == 0 {
		p.mu.Lock()
		p.rx, p.nrx, p.rxCall = q, virtio.NewNetRX(q), call
		p.mu.Unlock()
		return
	}
	w := &echoWorker{kick: kick, done: make(chan struct{})}
	p.tx = w
	go func() {
		defer close(w.done)
		// A frontend that shrinks its memory file makes the worker's
		// accesses fault: the fault ends the session (virtio/fault.go).
		debug.SetPanicOnFault(true)
		defer func() {
			if f := virtio.HandleFault(recover()); f != nil {
				d.fail(f)
			}
		}()
		d.runTX(p, q, call, w)
	}()
}

func (d *echoDevice) StopQueue(idx int) {
	d.stops.Add(1)
	p := d.pair(idx / 2)
	if idx%2 == 0 {
		p.mu.Lock()
		p.rx, p.nrx, p.rxCall = nil, nil, nil
		p.mu.Unlock()
		return
	}
	if w := p.tx; w != nil {
		w.stop.Store(true)
		w.kick.Interrupt()
		<-w.done
		p.tx = nil
	}
}

func (d *echoDevice) SetLog(l *virtio.DirtyLog) {
	d.logs.Add(1)
	d.logOn.Store(l != nil)
}

func (d *echoDevice) Close() { d.closed.Store(true) }

func (d *echoDevice) SetMTU(mtu uint16) { d.mtu.Store(uint32(mtu)) }

func (d *echoDevice) SendRARP(mac [6]byte) { d.rarp.Store(&mac) }

func (d *echoDevice) fail(err error) { d.broken.CompareAndSwap(nil, &err) }

// runTX is the transmit worker: pop a batch, echo each frame straight
// from its transmit buffers into the receive queue, then push, publish and
// call. It allocates nothing once warm.
func (d *echoDevice) runTX(p *echoPair, q *virtio.Queue, call virtio.Notifier, w *echoWorker) {
	var chains [32]virtio.Chain
	var segs [32][][]byte
	hdrs := make([]virtio.NetHdr, 0, len(chains))
	frames := make([][][]byte, 0, len(chains))
	hlen := virtio.NetHdrLen(q.Features())
	var idle virtio.Idle // sleeps as soon as the ring is empty
	q.DisableNotify()
	for !w.stop.Load() {
		n := 0
		for n < len(chains) {
			ok, err := q.Pop(&chains[n])
			if err != nil {
				d.fail(err)
				return
			}
			if !ok {
				break
			}
			n++
		}
		if n == 0 {
			if err := idle.Wait(q, w.kick, nil); err != nil {
				if !errors.Is(err, virtio.ErrInterrupted) {
					d.fail(err)
				}
				return
			}
			continue
		}
		frames, hdrs = frames[:0], hdrs[:0]
		for i := 0; i < n; i++ {
			c := &chains[i]
			if int(c.OutLen) < hlen {
				d.drops.Add(1)
				continue
			}
			var hb [virtio.NetHdrSize]byte
			c.ReadOut(0, hb[:hlen])
			var h virtio.NetHdr
			h.Decode(hb[:])
			h.NumBuffers = 0
			// The frame as slices of guest memory after the header.
			fs := segs[i][:0]
			skip := hlen
			for _, sg := range c.Out {
				b := sg.Buf
				k := min(skip, len(b))
				skip -= k
				if len(b) > k {
					fs = append(fs, b[k:])
				}
			}
			segs[i] = fs
			frames = append(frames, fs)
			hdrs = append(hdrs, h)
		}
		d.echo(p, hdrs, frames)
		for i := 0; i < n; i++ {
			if err := q.Push(chains[i].Head, 0); err != nil {
				d.fail(err)
				return
			}
		}
		q.Publish()
		if q.NeedNotify() {
			_ = call.Notify()
		}
		d.tx.Add(uint64(len(frames)))
	}
}

func (d *echoDevice) echo(p *echoPair, hdrs []virtio.NetHdr, frames [][][]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rx == nil {
		d.drops.Add(uint64(len(frames)))
		return
	}
	wrote := 0
	for i, fr := range frames {
		ok, err := p.nrx.Write(hdrs[i], fr)
		if err != nil {
			d.fail(err)
			return
		}
		if !ok {
			d.drops.Add(uint64(len(frames) - i))
			break
		}
		wrote++
	}
	if wrote == 0 {
		return
	}
	p.rx.Publish()
	if p.rx.NeedNotify() {
		_ = p.rxCall.Notify()
	}
	// Counted after the call, so a test that waits for the count sees the
	// call too (TestEventIdxCalls was flaky under qemu-user otherwise).
	d.rx.Add(uint64(wrote))
}

// harness is a Server with echo devices on a socket in a temp dir.
type harness struct {
	t       testing.TB
	srv     *vhostuser.Server
	path    string
	cancel  context.CancelFunc
	done    chan struct{}
	ended   chan ended
	mu      sync.Mutex
	devices map[uint64]*echoDevice
}

type ended struct {
	info vhostuser.SessionInfo
	err  error
}

// newHarness starts a server listening on a fresh socket; opts.NewDevice
// and OnSessionEnd are filled in.
func newHarness(t testing.TB, opts vhostuser.Options) *harness {
	t.Helper()
	return newHarnessAt(t, opts, filepath.Join(shortTempDir(t), "vu.sock"))
}

// newHarnessAt is newHarness listening on path.
func newHarnessAt(t testing.TB, opts vhostuser.Options, path string) *harness {
	t.Helper()
	return startHarness(t, opts, path, (*vhostuser.Server).Listen)
}

// newDialingHarness is a harness in the client role: its server connects
// to a frontend's socket at path (and reconnects).
func newDialingHarness(t testing.TB, opts vhostuser.Options, path string) *harness {
	t.Helper()
	return startHarness(t, opts, path, (*vhostuser.Server).Connect)
}

// startHarness starts a server that serves path through attach (Listen or
// Connect).
func startHarness(t testing.TB, opts vhostuser.Options, path string, attach func(*vhostuser.Server, string) error) *harness {
	t.Helper()
	h := &harness{t: t, ended: make(chan ended, 64), devices: make(map[uint64]*echoDevice)}
	opts.NewDevice = func(info vhostuser.SessionInfo) (vhostuser.Device, error) {
		d := newEchoDevice(info)
		h.mu.Lock()
		h.devices[info.ID] = d
		h.mu.Unlock()
		return d, nil
	}
	opts.OnSessionEnd = func(info vhostuser.SessionInfo, err error) { h.ended <- ended{info, err} }
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv, err := vhostuser.NewServer(opts)
	require.NoError(t, err)
	h.srv = srv
	h.path = path
	require.NoError(t, attach(srv, h.path))
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		_ = srv.Serve(ctx)
	}()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
}

// device returns the echo device of session id.
func (h *harness) device(id uint64) *echoDevice {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.devices[id]
}

// lastDevice returns the device of the newest session.
func (h *harness) lastDevice() *echoDevice {
	h.mu.Lock()
	defer h.mu.Unlock()
	var best *echoDevice
	for id, d := range h.devices {
		if best == nil || id > best.info.ID {
			best = d
		}
	}
	return best
}

// waitEnded returns the next session that ended.
func (h *harness) waitEnded() ended {
	h.t.Helper()
	select {
	case e := <-h.ended:
		return e
	case <-time.After(10 * time.Second):
		h.t.Fatal("no session ended")
		return ended{}
	}
}

// shortTempDir is a temp dir with a path short enough for a unix socket.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vhu")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// testLogger logs through t (visible with -v or on failure).
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
