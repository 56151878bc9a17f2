package datapath

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Capture receives every frame the switch forwards (after its checks, before
// delivery), for the "what is my guest sending" question. Capture is called
// on the forwarding goroutines, once per batch, with frames valid only
// during the call; it must copy what it keeps and must not block for long.
type Capture interface {
	Capture(frames []Frame)
}

// SetCapture makes the switch hand every frame it forwards to c (nil: no
// capture). With none set, the cost on the forward path is one atomic load
// per batch.
func (s *Switch) SetCapture(c Capture) {
	if c == nil {
		s.capture.Store(nil)
		return
	}
	s.capture.Store(&c)
}

// PcapWriter writes frames as a pcap file: the classic libpcap format with
// nanosecond timestamps (magic 0xa1b23c4d, version 2.4, link type 1
// LINKTYPE_ETHERNET), readable by tcpdump, Wireshark and tshark. GSO frames
// are written as the super-frames they are, like a capture on a TAP device
// with offloads shows them. It implements Capture; its methods are safe for
// concurrent use (one mutex, taken once per batch) and allocate nothing.
type PcapWriter struct {
	mu      sync.Mutex
	w       *bufio.Writer
	c       io.Closer // the file, if the writer owns one
	snaplen int
	hdr     [16]byte
	err     error
	closed  bool
	now     func() time.Time

	Frames, Bytes, Truncated atomic.Uint64
}

// DefaultSnaplen is the largest number of bytes of a frame a PcapWriter
// keeps by default: the largest IPv4 packet with its Ethernet and VLAN
// headers, so GSO super-frames are kept whole.
const DefaultSnaplen = 65535 + 18

// NewPcapWriter writes the pcap file header to w and returns a writer that
// keeps up to snaplen bytes of each frame (0: DefaultSnaplen). If w is an
// io.Closer, Close closes it.
func NewPcapWriter(w io.Writer, snaplen int) (*PcapWriter, error) {
	if snaplen == 0 {
		snaplen = DefaultSnaplen
	}
	if snaplen < 64 || snaplen > 1<<18 {
		return nil, fmt.Errorf("pcap: snaplen %d: want 64..%d", snaplen, 1<<18)
	}
	p := &PcapWriter{w: bufio.NewWriterSize(w, 1<<16), snaplen: snaplen, now: time.Now}
	p.c, _ = w.(io.Closer)
	var fh [24]byte
	binary.LittleEndian.PutUint32(fh[0:], 0xa1b23c4d) // nanosecond timestamps
	binary.LittleEndian.PutUint16(fh[4:], 2)
	binary.LittleEndian.PutUint16(fh[6:], 4)
	binary.LittleEndian.PutUint32(fh[16:], uint32(snaplen))
	binary.LittleEndian.PutUint32(fh[20:], 1) // LINKTYPE_ETHERNET
	if _, err := p.w.Write(fh[:]); err != nil {
		return nil, fmt.Errorf("pcap: %w", err)
	}
	return p, nil
}

// Capture appends frames to the file (buffered; see Flush). After a write
// error it drops everything; Err reports the error.
func (p *PcapWriter) Capture(frames []Frame) {
	ts := p.now()
	sec, nsec := uint32(ts.Unix()), uint32(ts.Nanosecond())
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return
	}
	var bytes, trunc uint64
	for i := range frames {
		f := &frames[i]
		incl := min(f.Len, p.snaplen)
		binary.LittleEndian.PutUint32(p.hdr[0:], sec)
		binary.LittleEndian.PutUint32(p.hdr[4:], nsec)
		binary.LittleEndian.PutUint32(p.hdr[8:], uint32(incl))
		binary.LittleEndian.PutUint32(p.hdr[12:], uint32(f.Len))
		_, _ = p.w.Write(p.hdr[:])
		left := incl
		for _, s := range f.Segs {
			if left == 0 {
				break
			}
			s = s[:min(len(s), left)]
			_, _ = p.w.Write(s)
			left -= len(s)
		}
		bytes += uint64(incl)
		if incl < f.Len {
			trunc++
		}
	}
	// bufio.Writer keeps its first error and returns it from every later
	// call: one check per batch is enough.
	if _, err := p.w.Write(nil); err != nil {
		p.err = err
		return
	}
	p.Frames.Add(uint64(len(frames)))
	p.Bytes.Add(bytes)
	p.Truncated.Add(trunc)
}

// Flush writes buffered frames to the underlying writer.
func (p *PcapWriter) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = p.w.Flush()
	}
	return p.err
}

// Err returns the first write error, if any.
func (p *PcapWriter) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close flushes and closes the underlying writer if it is an io.Closer.
// Capture after Close drops frames. Close is idempotent.
func (p *PcapWriter) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	err := p.err
	if err == nil {
		err = p.w.Flush()
	}
	if p.c != nil {
		err = errors.Join(err, p.c.Close())
	}
	if p.err == nil {
		p.err = errPcapClosed
	}
	return err
}

var errPcapClosed = errors.New("pcap: closed")
