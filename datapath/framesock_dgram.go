package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// vfkitHello is the datagram vfkit and libkrun (NET_FLAG_VFKIT) send first
// to announce their address (gvproxy's vfkit mode expects it): the four
// bytes "VFKT", never a frame (an Ethernet header is 14 bytes).
var vfkitHello = []byte("VFKT")

// MaxDgramPeers bounds the peers one datagram socket serves at once: any
// process that may write to the socket can make up source addresses.
const MaxDgramPeers = 256

// dgramSendWait is how long a datagram port's writer retries a peer whose
// receive queue is full before it drops the rest of the batch.
const dgramSendWait = 20 * time.Millisecond

// DgramListener serves frame-socket peers on one unix datagram socket: one
// FramePort per source address. See framesock.go.
type DgramListener struct {
	opt  FrameSockOptions
	log  *slog.Logger
	conn *net.UnixConn
	rx   *dgramRx

	mu      sync.Mutex
	peers   map[string]*dgramPeer
	closed  bool
	warned  atomic.Uint32 // bit 0: unnamed peer, bit 1: too many peers
	stopped chan struct{}
}

// dgramPeer is one source address on a DgramListener.
type dgramPeer struct {
	l    *DgramListener
	addr string
	port *FramePort
	tx   *dgramTx
	full atomic.Bool // the last batch found the peer's queue full (logged once)
}

// NewDgramListener returns a listener serving the unix datagram socket
// conn; Serve runs it. It sizes the socket's buffers for throughput.
func NewDgramListener(conn *net.UnixConn, opt FrameSockOptions) (*DgramListener, error) {
	_ = conn.SetReadBuffer(frameSockSocketBuf)
	_ = conn.SetWriteBuffer(frameSockSocketBuf)
	rx, err := newDgramRx(conn)
	if err != nil {
		return nil, fmt.Errorf("datapath: frame socket %s: %w", opt.Path, err)
	}
	return &DgramListener{opt: opt, log: opt.logger(), conn: conn, rx: rx,
		peers: map[string]*dgramPeer{}, stopped: make(chan struct{})}, nil
}

// dgramRun is the reader's state for one batch: the run of datagrams from
// one peer being gathered.
type dgramRun struct {
	peer   *dgramPeer
	addr   []byte
	n      int
	frames [MaxBatch]Frame
	segs   [MaxBatch][1][]byte
}

// Serve reads datagrams until Close; it returns nil after Close.
func (l *DgramListener) Serve() error {
	defer close(l.stopped)
	run := new(dgramRun)
	for i := range run.frames {
		run.frames[i].Segs = run.segs[i][:]
	}
	for {
		n, err := l.rx.recv()
		if err != nil {
			l.mu.Lock()
			closed := l.closed
			l.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("datapath: frame socket %s: %w", l.opt.Path, err)
		}
		l.dispatch(run, n)
	}
}

// dispatch hands the n datagrams received to their peers' ports, a run of
// datagrams from one peer at a time.
func (l *DgramListener) dispatch(run *dgramRun, n int) {
	run.peer, run.addr, run.n = nil, nil, 0
	for i := 0; i < n; i++ {
		addr, data := l.rx.datagram(i)
		if run.addr == nil || !bytes.Equal(addr, run.addr) {
			run.flush()
			run.peer, run.addr = l.peerFor(addr), addr
			if run.addr == nil {
				run.addr = addr[:0:0]
			}
		}
		p := run.peer
		if p == nil {
			continue
		}
		if bytes.Equal(data, vfkitHello) {
			continue // the hello made the peer (peerFor) and is not a frame
		}
		if len(data) < minFrameLen {
			p.port.stats.Drop(DropMalformed, 1)
			continue
		}
		run.segs[run.n][0] = data
		run.frames[run.n] = Frame{Segs: run.segs[run.n][:], Len: len(data)}
		run.n++
	}
	run.flush()
}

func (r *dgramRun) flush() {
	if r.n > 0 && r.peer != nil {
		r.peer.port.input(r.frames[:r.n])
	}
	r.n = 0
}

// peerFor returns the peer at addr, making it on its first datagram; nil
// for a datagram that cannot be answered (no source address) or one more
// peer than MaxDgramPeers.
func (l *DgramListener) peerFor(addr []byte) *dgramPeer {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.peers[string(addr)]; p != nil {
		return p
	}
	if l.closed {
		return nil
	}
	if len(addr) == 0 {
		if l.warned.Or(1)&1 == 0 {
			l.log.Warn("frame socket datagram without a source address dropped: the peer must bind its socket to a path",
				"path", l.opt.Path)
		}
		return nil
	}
	if len(l.peers) >= MaxDgramPeers {
		if l.warned.Or(2)&2 == 0 {
			l.log.Warn("frame socket has its maximum of peers; datagrams from new addresses dropped",
				"path", l.opt.Path, "max", MaxDgramPeers)
		}
		return nil
	}
	tx, err := newDgramTx(l.conn, addr)
	if err != nil {
		l.log.Warn("frame socket peer refused", "path", l.opt.Path, "peer", strconv.Quote(string(addr)), "err", err)
		return nil
	}
	p := &dgramPeer{l: l, addr: string(addr), tx: tx}
	p.port = newFramePort(l.opt.Name(), l.log, l.opt.MTU, false, p, func(fp *FramePort, err error) {
		l.mu.Lock()
		if l.peers[p.addr] == p {
			delete(l.peers, p.addr)
		}
		l.mu.Unlock()
		if l.opt.Detach != nil {
			l.opt.Detach(fp, err)
		}
	})
	if l.opt.Attach != nil {
		if err := l.opt.Attach(p.port, p.addr); err != nil {
			l.log.Warn("frame socket peer refused", "path", l.opt.Path, "peer", p.addr, "err", err)
			p.port.end(err)
			return nil
		}
	}
	l.peers[p.addr] = p
	return p
}

// errPeerGone ends a datagram peer whose socket is gone.
var errPeerGone = errors.New("peer socket gone")

// writeFrames sends the queued frames to the peer, a batch per system call
// where the system has one (sendmmsg). A peer whose socket is gone ends the
// port; a peer whose receive queue stays full for dgramSendWait loses the
// rest of the batch (drop_no_buffer).
func (p *dgramPeer) writeFrames(buf []byte, ends []int) error {
	start, i := 0, 0
	var waited time.Duration
	for i < len(ends) {
		k, err := p.tx.send(buf, ends, start, i)
		if k > 0 {
			start = ends[i+k-1]
			i += k
			waited = 0
			p.full.Store(false)
			continue
		}
		switch {
		case errors.Is(err, errDgramFull):
			if waited >= dgramSendWait {
				p.port.stats.Drop(DropNoBuffer, uint64(len(ends)-i))
				if !p.full.Swap(true) {
					p.port.log.Warn("frame socket peer does not read its datagrams; frames dropped")
				}
				return nil
			}
			time.Sleep(50 * time.Microsecond)
			waited += 50 * time.Microsecond
		case errors.Is(err, errPeerGone):
			p.port.log.Info("frame socket peer went away", "peer", p.addr, "err", err)
			return err
		case err != nil:
			// This datagram alone (too big for the peer, say).
			p.port.stats.Drop(DropTooBig, 1)
			start = ends[i]
			i++
		}
	}
	return nil
}

// Close stops the listener, ends every peer's port and closes the socket.
func (l *DgramListener) Close() error {
	l.mu.Lock()
	l.closed = true
	ps := make([]*dgramPeer, 0, len(l.peers))
	for _, p := range l.peers {
		ps = append(ps, p)
	}
	l.mu.Unlock()
	err := l.conn.Close()
	for _, p := range ps {
		p.port.Close()
	}
	return err
}

// Peers returns the number of peers served now.
func (l *DgramListener) Peers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.peers)
}

// errDgramFull is a send that found the peer's receive queue full.
var errDgramFull = errors.New("peer receive queue full")
