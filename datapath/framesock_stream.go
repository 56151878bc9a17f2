package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// FrameSockOptions configures a StreamListener or DgramListener.
type FrameSockOptions struct {
	// Path is what the logs call the socket (its path or address).
	Path string
	// MTU is the largest IP packet passed on unsegmented (larger ones are
	// super-frames, framesock_offload.go); 0 means DefaultFrameSockMTU.
	MTU int
	// Name returns the name of a new peer's port ("guest3").
	Name func() string
	// Attach is called with each new peer's port before any of its frames
	// are handed on (it attaches the port to the switch); an error refuses
	// the peer. peer is the peer's address as the socket gave it.
	Attach func(p *FramePort, peer string) error
	// Detach is called once when a peer's port has ended (the peer went
	// away, broke the framing, or the listener closed), from a goroutine
	// of its own; err says why.
	Detach func(p *FramePort, err error)
	// Logger receives the records; nil means slog.Default.
	Logger *slog.Logger
}

func (o *FrameSockOptions) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.Default()
	}
	return o.Logger
}

// StreamListener serves frame-socket peers on a stream listener (unix or
// TCP): each accepted connection is one FramePort. See framesock.go.
type StreamListener struct {
	opt FrameSockOptions
	log *slog.Logger
	ln  net.Listener

	mu     sync.Mutex
	conns  map[*FramePort]net.Conn
	closed bool
	wg     sync.WaitGroup
}

// NewStreamListener returns a listener serving ln; Serve runs it.
func NewStreamListener(ln net.Listener, opt FrameSockOptions) *StreamListener {
	return &StreamListener{opt: opt, log: opt.logger(), ln: ln, conns: map[*FramePort]net.Conn{}}
}

// Serve accepts peers until Close; it returns nil after Close.
func (l *StreamListener) Serve() error {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			l.mu.Lock()
			closed := l.closed
			l.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE and the like: back off rather than spin.
			l.log.Warn("frame socket accept failed", "path", l.opt.Path, "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		l.serveConn(c)
	}
}

// serveConn makes c's port and starts its reader.
func (l *StreamListener) serveConn(c net.Conn) {
	setBuffers(c)
	sw := &streamWriter{c: c}
	p := newFramePort(l.opt.Name(), l.log, l.opt.MTU, true, sw, func(p *FramePort, err error) {
		_ = c.Close()
		l.mu.Lock()
		delete(l.conns, p)
		l.mu.Unlock()
		if l.opt.Detach != nil {
			l.opt.Detach(p, err)
		}
	})
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = c.Close()
		p.Close()
		return
	}
	l.conns[p] = c
	l.mu.Unlock()
	peer := c.RemoteAddr().String()
	if l.opt.Attach != nil {
		if err := l.opt.Attach(p, peer); err != nil {
			l.log.Warn("frame socket peer refused", "path", l.opt.Path, "err", err)
			p.end(err)
			return
		}
	}
	l.wg.Go(func() { p.end(readStream(c, p)) })
}

// Close stops accepting, closes every peer's connection and waits for
// their readers.
func (l *StreamListener) Close() error {
	l.mu.Lock()
	l.closed = true
	ps := make([]*FramePort, 0, len(l.conns))
	for p, c := range l.conns {
		_ = c.Close()
		ps = append(ps, p)
	}
	l.mu.Unlock()
	err := l.ln.Close()
	l.wg.Wait()
	for _, p := range ps {
		p.Close()
	}
	return err
}

// setBuffers asks for large socket buffers (throughput); the kernel may
// give less, which only costs speed.
func setBuffers(c net.Conn) {
	type buffered interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}
	if b, ok := c.(buffered); ok {
		_ = b.SetReadBuffer(frameSockSocketBuf)
		_ = b.SetWriteBuffer(frameSockSocketBuf)
	}
}

// frameSockSocketBuf is the SO_RCVBUF/SO_SNDBUF asked for (Linux caps it at
// net.core.rmem_max/wmem_max).
const frameSockSocketBuf = 8 << 20

// streamWriter writes queued stream frames (already length-prefixed).
type streamWriter struct{ c net.Conn }

func (w *streamWriter) writeFrames(buf []byte, _ []int) error {
	_, err := w.c.Write(buf)
	return err
}

// Stream framing errors: each closes that peer's connection.
var (
	errStreamZeroLen   = errors.New("frame length 0")
	errStreamTooLong   = errors.New("frame length above the maximum")
	errStreamTruncated = errors.New("peer closed the connection in the middle of a frame")
)

// streamReadBuf is the reader's buffer: several maximal frames, so that a
// read usually brings many whole frames.
const streamReadBuf = 4 * (streamLenSize + maxFrameLen)

// streamDecoder splits a byte stream into frames; it holds no state but
// the maximum, so it can be fuzzed alone.
//
// next returns the first frame in b and the bytes it took (prefix
// included); n == 0 means b does not hold a whole frame yet. A length of 0
// or above maxFrameLen is an error: the stream cannot be resynchronised.
func streamNext(b []byte) (frame []byte, n int, err error) {
	if len(b) < streamLenSize {
		return nil, 0, nil
	}
	l := binary.BigEndian.Uint32(b)
	switch {
	case l == 0:
		return nil, 0, errStreamZeroLen
	case l > maxFrameLen:
		return nil, 0, fmt.Errorf("%w: %d > %d", errStreamTooLong, l, maxFrameLen)
	}
	end := streamLenSize + int(l)
	if len(b) < end {
		return nil, 0, nil
	}
	return b[streamLenSize:end], end, nil
}

// streamBatch is the reader's reusable state.
type streamBatch struct {
	buf    []byte
	r, w   int
	frames [MaxBatch]Frame
	segs   [MaxBatch][1][]byte
}

func newStreamBatch() *streamBatch {
	b := &streamBatch{buf: make([]byte, streamReadBuf)}
	for i := range b.frames {
		b.frames[i].Segs = b.segs[i][:]
	}
	return b
}

// drain hands every whole frame in b.buf[r:w] to p, in batches, and
// counts those too short to be a frame (drop_malformed) before it hands on
// the frames read with them: whoever sees those frames arrive sees the
// count (TestStreamShortFrameDropped read it too early under arm64
// emulation when readStream counted after the batch). It returns a framing
// error.
func (b *streamBatch) drain(p *FramePort) error {
	for {
		n, short := 0, 0
		for n < MaxBatch {
			frame, k, err := streamNext(b.buf[b.r:b.w])
			if err != nil {
				p.stats.Drop(DropMalformed, uint64(short))
				p.input(b.frames[:n])
				return err
			}
			if k == 0 {
				break
			}
			b.r += k
			if len(frame) < minFrameLen {
				short++
				continue
			}
			b.segs[n][0] = frame
			b.frames[n] = Frame{Segs: b.segs[n][:], Len: len(frame)}
			n++
		}
		p.stats.Drop(DropMalformed, uint64(short))
		p.input(b.frames[:n])
		if n < MaxBatch {
			return nil
		}
	}
}

// readStream reads frames from c for p until c fails or breaks the
// framing, and returns why.
func readStream(c io.Reader, p *FramePort) error {
	b := newStreamBatch()
	for {
		if b.r == b.w {
			b.r, b.w = 0, 0
		} else if len(b.buf)-b.w < streamLenSize+maxFrameLen {
			// Move a partial frame to the front: the buffer always has
			// room for a whole maximal frame after what it holds.
			b.w = copy(b.buf, b.buf[b.r:b.w])
			b.r = 0
		}
		k, rerr := c.Read(b.buf[b.w:])
		b.w += k
		if err := b.drain(p); err != nil {
			p.log.Warn("frame socket peer broke the stream framing; connection closed", "err", err)
			return err
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if b.r != b.w {
					p.log.Warn("frame socket peer closed the connection in the middle of a frame",
						"have", b.w-b.r, "need", streamNeed(b.buf[b.r:b.w]))
					return errStreamTruncated
				}
				p.log.Info("frame socket peer closed the connection")
				return io.EOF
			}
			return rerr
		}
	}
}

// streamNeed is how many bytes the partial frame in b needs in all.
func streamNeed(b []byte) int {
	if len(b) < streamLenSize {
		return streamLenSize
	}
	return streamLenSize + int(binary.BigEndian.Uint32(b))
}
