package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// fsEnv is a switch with a capturing port ("cap", spoofing allowed) and
// frame-socket listeners whose peers attach to it.
type fsEnv struct {
	t       *testing.T
	dir     string
	sw      *Switch
	cap     *capPort
	capSP   *SwitchPort
	n       atomic.Int32
	mu      sync.Mutex
	sps     map[*FramePort]*SwitchPort
	peers   map[*FramePort]string
	attach  chan *FramePort
	detach  chan fsEnded
	streams []*StreamListener
	dgrams  []*DgramListener
}

type fsEnded struct {
	p   *FramePort
	err error
}

func newFSEnv(t *testing.T) *fsEnv {
	t.Helper()
	// Short: sun_path has 108 bytes.
	dir, err := os.MkdirTemp("", "fs")
	if err != nil {
		t.Fatal(err)
	}
	sw, err := NewSwitch(SwitchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := &fsEnv{t: t, dir: dir, sw: sw, cap: newCapPort("cap"), sps: map[*FramePort]*SwitchPort{},
		peers: map[*FramePort]string{}, attach: make(chan *FramePort, 16), detach: make(chan fsEnded, 16)}
	if e.capSP, err = sw.Attach(e.cap, PortOptions{AllowSpoofing: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, l := range e.streams {
			_ = l.Close()
		}
		for _, l := range e.dgrams {
			_ = l.Close()
		}
		_ = os.RemoveAll(dir)
	})
	return e
}

func (e *fsEnv) opts(path string) FrameSockOptions {
	return FrameSockOptions{
		Path:   path,
		Logger: testLogger(e.t),
		Name:   func() string { return fmt.Sprintf("fs%d", e.n.Add(1)-1) },
		Attach: func(p *FramePort, peer string) error {
			sp, err := e.sw.Attach(p, PortOptions{})
			if err != nil {
				return err
			}
			e.mu.Lock()
			e.sps[p], e.peers[p] = sp, peer
			e.mu.Unlock()
			e.attach <- p
			return nil
		},
		Detach: func(p *FramePort, err error) {
			e.mu.Lock()
			sp := e.sps[p]
			e.mu.Unlock()
			if sp != nil {
				e.sw.Detach(sp)
			}
			e.detach <- fsEnded{p, err}
		},
	}
}

func (e *fsEnv) stream() string {
	path := filepath.Join(e.dir, fmt.Sprintf("s%d", len(e.streams)))
	ln, err := net.Listen("unix", path)
	if err != nil {
		e.t.Fatal(err)
	}
	l := NewStreamListener(ln, e.opts(path))
	e.streams = append(e.streams, l)
	go func() { _ = l.Serve() }()
	return path
}

func (e *fsEnv) dgram() (string, *DgramListener) {
	path := filepath.Join(e.dir, fmt.Sprintf("d%d", len(e.dgrams)))
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		e.t.Fatal(err)
	}
	l, err := NewDgramListener(c, e.opts(path))
	if err != nil {
		e.t.Fatal(err)
	}
	e.dgrams = append(e.dgrams, l)
	go func() { _ = l.Serve() }()
	return path, l
}

func (e *fsEnv) attached() *FramePort {
	e.t.Helper()
	select {
	case p := <-e.attach:
		return p
	case <-time.After(10 * time.Second):
		e.t.Fatal("no peer attached")
	}
	return nil
}

func (e *fsEnv) detached() fsEnded {
	e.t.Helper()
	select {
	case d := <-e.detach:
		return d
	case <-time.After(10 * time.Second):
		e.t.Fatal("no peer detached")
	}
	return fsEnded{}
}

// toPeer sends frame into the switch from the capturing port.
func (e *fsEnv) toPeer(frame []byte) {
	e.capSP.Send([]Frame{{Segs: [][]byte{frame}, Len: len(frame)}})
}

func streamMsg(frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// readStreamFrame reads one length-prefixed frame from c.
func readStreamFrame(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var l [4]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		t.Fatal(err)
	}
	f := make([]byte, binary.BigEndian.Uint32(l[:]))
	if _, err := io.ReadFull(c, f); err != nil {
		t.Fatal(err)
	}
	return f
}

func waitFrames(t *testing.T, c *capPort, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("captured %d frames, want %d", c.Count(), n)
		}
		time.Sleep(time.Millisecond)
	}
	return c.TakeFrames()
}

func TestStreamFraming(t *testing.T) {
	e := newFSEnv(t)
	path := e.stream()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f1 := udp4Frame(macB, macA, ipA, ipB, 1, 2, 10)
	f2 := udp4Frame(macB, macA, ipA, ipB, 1, 2, 1400)
	f3 := ethFrame(header.BroadcastMAC, macA, 0x88b5, make([]byte, 46))
	msg := streamMsg(f1, f2, f3)
	// Short writes: one byte at a time for the first frame and a half,
	// then the rest at once.
	cut := len(f1) + 4 + len(f2)/2
	for i := 0; i < cut; i++ {
		if _, err := c.Write(msg[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Write(msg[cut:]); err != nil {
		t.Fatal(err)
	}
	p := e.attached()
	got := waitFrames(t, e.cap, 3)
	for i, want := range [][]byte{f1, f2, f3} {
		if string(got[i]) != string(want) {
			t.Fatalf("frame %d differs", i)
		}
	}
	if rx := p.Stats().RxPackets.Load(); rx != 3 {
		t.Fatalf("rx_packets %d, want 3", rx)
	}
	// And back: the switch learnt macA on the stream port.
	back := udp4Frame(macA, macB, ipB, ipA, 2, 1, 100)
	e.toPeer(back)
	if got := readStreamFrame(t, c); string(got) != string(back) {
		t.Fatal("frame to the peer differs")
	}
}

func TestStreamBadPeers(t *testing.T) {
	good := udp4Frame(macB, macA, ipA, ipB, 1, 2, 10)
	for _, tc := range []struct {
		name  string
		bytes []byte
		want  error
	}{
		{"zero length", []byte{0, 0, 0, 0}, errStreamZeroLen},
		{"length above the maximum", binary.BigEndian.AppendUint32(nil, maxFrameLen+1), errStreamTooLong},
		{"length far above", []byte{0xff, 0xff, 0xff, 0xff}, errStreamTooLong},
		{"dies mid-frame", streamMsg(good)[:20], errStreamTruncated},
		{"dies mid-length", []byte{0, 0}, errStreamTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newFSEnv(t)
			path := e.stream()
			// A well-behaved peer beside the bad one keeps working.
			ok, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer ok.Close()
			if _, err := ok.Write(streamMsg(good)); err != nil {
				t.Fatal(err)
			}
			okPort := e.attached()
			waitFrames(t, e.cap, 1)

			bad, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			if _, err := bad.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			if tc.want == errStreamTruncated {
				_ = bad.Close()
			}
			badPort := e.attached()
			d := e.detached()
			if d.p != badPort || !errors.Is(d.err, tc.want) {
				t.Fatalf("detached %s with %v, want %s with %v", d.p.Name(), d.err, badPort.Name(), tc.want)
			}
			if tc.want != errStreamTruncated {
				// The process closed the bad connection.
				_ = bad.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := bad.Read(make([]byte, 1)); err == nil {
					t.Fatal("bad peer's connection still open")
				}
			}
			if _, err := ok.Write(streamMsg(good)); err != nil {
				t.Fatal(err)
			}
			waitFrames(t, e.cap, 1)
			if okPort.Err() != nil {
				t.Fatalf("good peer ended: %v", okPort.Err())
			}
		})
	}
}

func TestStreamShortFrameDropped(t *testing.T) {
	e := newFSEnv(t)
	c, err := net.Dial("unix", e.stream())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good := udp4Frame(macB, macA, ipA, ipB, 1, 2, 10)
	if _, err := c.Write(streamMsg([]byte{1, 2, 3}, good)); err != nil {
		t.Fatal(err)
	}
	p := e.attached()
	waitFrames(t, e.cap, 1)
	if d := p.Stats().Drops(DropMalformed); d != 1 {
		t.Fatalf("drop_malformed %d, want 1", d)
	}
}

// TestStreamShortFrameBeforeBadLength: a short frame read with a length
// that breaks the framing is still counted (drain returned before it
// counted it once), and the good frame before both still goes through.
func TestStreamShortFrameBeforeBadLength(t *testing.T) {
	p := newFramePort("p", testLogger(t), 0, true, &recWriter{}, nil)
	defer p.Close()
	sink := &countPort{name: "sink"}
	p.SetPeer(sink)
	good := udp4Frame(macB, macA, ipA, ipB, 1, 2, 10)
	b := newStreamBatch()
	msg := append(streamMsg(good, []byte{1, 2, 3}), 0, 0, 0, 0) // a zero length breaks the framing
	b.r, b.w = 0, copy(b.buf, msg)
	if err := b.drain(p); !errors.Is(err, errStreamZeroLen) {
		t.Fatalf("drain: %v, want %v", err, errStreamZeroLen)
	}
	if d := p.Stats().Drops(DropMalformed); d != 1 {
		t.Fatalf("drop_malformed %d, want 1", d)
	}
	if n := sink.n.Load(); n != 1 {
		t.Fatalf("%d frames went through, want 1", n)
	}
}

// dgramPeer binds a unix datagram socket in dir and connects it to path.
func dialDgram(t *testing.T, dir, name, path string) *net.UnixConn {
	t.Helper()
	local := filepath.Join(dir, name)
	c, err := net.DialUnix("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"}, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); os.Remove(local) })
	return c
}

func readDgram(t *testing.T, c *net.UnixConn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 70000)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

// readDgramUntil reads datagrams from c until one is want; it fails on a
// frame for another MAC than want's that was not flooded (a unicast frame
// delivered to the wrong peer).
func readDgramUntil(t *testing.T, c *net.UnixConn, want []byte) {
	t.Helper()
	for {
		got := readDgram(t, c)
		if string(got) == string(want) {
			return
		}
		if string(got[:6]) == string(want[:6]) {
			t.Fatalf("frame for %x differs", want[:6])
		}
	}
}

func TestDgramPeers(t *testing.T) {
	e := newFSEnv(t)
	path, l := e.dgram()
	// vfkit: the hello first.
	vf := dialDgram(t, e.dir, "vf", path)
	if _, err := vf.Write([]byte("VFKT")); err != nil {
		t.Fatal(err)
	}
	pv := e.attached()
	e.mu.Lock()
	addr := e.peers[pv]
	e.mu.Unlock()
	if want := filepath.Join(e.dir, "vf"); addr != want {
		t.Fatalf("peer address %q, want %q", addr, want)
	}
	// QEMU -netdev dgram: frames straight away.
	qm := dialDgram(t, e.dir, "qm", path)
	fq := udp4Frame(macB, macC, ipB, ipA, 3, 4, 64)
	if _, err := qm.Write(fq); err != nil {
		t.Fatal(err)
	}
	pq := e.attached()
	fv := udp4Frame(macB, macA, ipA, ipB, 1, 2, 64)
	if _, err := vf.Write(fv); err != nil {
		t.Fatal(err)
	}
	got := waitFrames(t, e.cap, 2)
	if string(got[0]) != string(fq) || string(got[1]) != string(fv) {
		t.Fatal("frames differ")
	}
	if pv.Stats().RxPackets.Load() != 1 || pq.Stats().RxPackets.Load() != 1 {
		t.Fatal("frames counted on the wrong peers")
	}
	if l.Peers() != 2 {
		t.Fatalf("%d peers, want 2", l.Peers())
	}
	// Each gets its own frames back.
	toV := udp4Frame(macA, macB, ipB, ipA, 9, 1, 30)
	toQ := udp4Frame(macC, macB, ipB, ipB, 9, 3, 40)
	e.toPeer(toQ)
	e.toPeer(toV)
	// (Before the switch knew macB, each peer's frame was flooded to
	// the other: skip those.)
	readDgramUntil(t, vf, toV)
	readDgramUntil(t, qm, toQ)
	// A peer that goes away is noticed on the next send, its port freed.
	qm.Close()
	os.Remove(filepath.Join(e.dir, "qm"))
	e.toPeer(toQ)
	if d := e.detached(); d.p != pq || !errors.Is(d.err, errPeerGone) {
		t.Fatalf("detached %v with %v", d.p.Name(), d.err)
	}
	if l.Peers() != 1 {
		t.Fatalf("%d peers, want 1", l.Peers())
	}
	// It comes back (a new port), and the other peer never noticed.
	qm2 := dialDgram(t, e.dir, "qm", path)
	if _, err := qm2.Write(fq); err != nil {
		t.Fatal(err)
	}
	if p := e.attached(); p == pq {
		t.Fatal("old port reused")
	}
	e.toPeer(toV)
	readDgramUntil(t, vf, toV)
}

func TestDgramUnnamedPeerIgnored(t *testing.T) {
	e := newFSEnv(t)
	path, l := e.dgram()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(udp4Frame(macB, macA, ipA, ipB, 1, 2, 10)); err != nil {
		t.Fatal(err)
	}
	named := dialDgram(t, e.dir, "n", path)
	if _, err := named.Write([]byte("VFKT")); err != nil {
		t.Fatal(err)
	}
	e.attached()
	if l.Peers() != 1 || e.cap.Count() != 0 {
		t.Fatalf("%d peers, %d frames: the unnamed peer was served", l.Peers(), e.cap.Count())
	}
}

// TestFrameSockOffload sends super-frames and partial checksums the way
// libkrun does with krunkit offloading=on (no virtio-net header) from a
// datagram peer to a stream peer, which takes no offloads: what arrives is
// MTU-sized segments with complete checksums.
func TestFrameSockOffload(t *testing.T) {
	e := newFSEnv(t)
	dpath, _ := e.dgram()
	spath := e.stream()
	sc, err := net.Dial("unix", spath)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	// The stream peer announces macB.
	if _, err := sc.Write(streamMsg(udp4Frame(header.BroadcastMAC, macB, ipB, ipA, 1, 1, 10))); err != nil {
		t.Fatal(err)
	}
	e.attached()
	waitFrames(t, e.cap, 1)
	kr := dialDgram(t, e.dir, "kr", dpath)

	tcpSuper, _ := tcpGSOFrame(gsoSpec{payload: 20000, mss: 1448, flags: header.TCPFlagACK | header.TCPFlagPSH}, macA, macB)
	udpSuper, _ := udpGSOFrame(gsoSpec{payload: 5000}, macA, macB)
	partial := headertest.Frame{Dst: macB, Src: macA, IPv4: &headertest.IPv4Header{ID: 7, Src: ipA, Dst: ipB},
		TCP:     &headertest.TCPHeader{SrcPort: 1, DstPort: 2, Flags: header.TCPFlagACK, Csum: headertest.CsumPartial},
		Payload: make([]byte, 300)}.Build()
	for _, f := range [][]byte{tcpSuper, udpSuper, partial} {
		if _, err := kr.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	e.attached()
	var tcpBytes, frags int
	for {
		f := readStreamFrame(t, sc)
		if len(f) > header.EthernetMinSize+DefaultFrameSockMTU {
			t.Fatalf("frame of %d bytes above the MTU", len(f))
		}
		ip := header.IPv4(f[header.EthernetMinSize:])
		switch {
		case ip.Protocol() == header.ProtoTCP && ip.ID() == 7:
			headertest.CheckIPv4(t, f, headertest.ExactLength(), headertest.TCP())
			if tcpBytes != 20000 || frags*1480 < 5008 {
				t.Fatalf("partial frame before the segments were all through: %d TCP bytes, %d fragments", tcpBytes, frags)
			}
			return
		case ip.Protocol() == header.ProtoTCP:
			headertest.CheckIPv4(t, f, headertest.ExactLength(), headertest.TCP())
			tcpBytes += len(f) - header.EthernetMinSize - ip.HeaderLen() - header.TCP(ip.Payload()).HeaderLen()
		case ip.Protocol() == header.ProtoUDP:
			headertest.CheckIPv4(t, f, headertest.ExactLength(), headertest.Fragments())
			frags++
		default:
			t.Fatalf("unexpected frame %x", f[:40])
		}
	}
}

func TestInboundOffload(t *testing.T) {
	plain := udp4Frame(macB, macA, ipA, ipB, 1, 2, 100)
	partial := headertest.Frame{Dst: macB, Src: macA, IPv4: &headertest.IPv4Header{Src: ipA, Dst: ipB},
		UDP: &headertest.UDPHeader{SrcPort: 1, DstPort: 2, Csum: headertest.CsumPartial}, Payload: make([]byte, 100)}.Build()
	partial6 := headertest.Frame{Dst: macB, Src: macA, IPv6: &headertest.IPv6Header{Src: ip6A, Dst: ip6B},
		TCP: &headertest.TCPHeader{SrcPort: 1, DstPort: 2, Csum: headertest.CsumPartial}, Payload: make([]byte, 100)}.Build()
	padded := append(append([]byte{}, partial[:len(partial)-80]...), make([]byte, 10)...)
	header.IPv4(padded[14:]).SetTotalLength(uint16(len(padded) - 14 - 10))
	tcp4, _ := tcpGSOFrame(gsoSpec{payload: 9000, mss: 100, flags: header.TCPFlagACK}, macA, macB)
	tcp6ecn, _ := tcpGSOFrame(gsoSpec{v6: true, payload: 3000, mss: 100, flags: header.TCPFlagCWR | header.TCPFlagACK}, macA, macB)
	udp6, _ := udpGSOFrame(gsoSpec{v6: true, payload: 3000}, macA, macB)
	bigARP := ethFrame(header.BroadcastMAC, macA, header.EtherTypeARP, make([]byte, 1600))
	fragBig := udp4Frame(macB, macA, ipA, ipB, 1, 2, 2000)
	header.IPv4(fragBig[14:]).SetFlagsFragmentOffset(header.IPv4FlagMF)
	for _, tc := range []struct {
		name  string
		frame []byte
		want  int
		hdr   virtio.NetHdr
	}{
		{"plain", plain, offloadNone, virtio.NetHdr{}},
		{"partial udp4", partial, offloadSet, virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}},
		{"partial tcp6", partial6, offloadSet, virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 54, CsumOffset: 16}},
		{"padded", padded, offloadNone, virtio.NetHdr{}},
		{"tcp4 super", tcp4, offloadSet, virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOTCPv4,
			GSOSize: 1500 - 20 - 32, HdrLen: 14 + 20 + 32, CsumStart: 34, CsumOffset: 16}},
		{"tcp6 super ecn", tcp6ecn, offloadSet, virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOTCPv6 | virtio.NetHdrGSOECN,
			GSOSize: 1500 - 40 - 32, HdrLen: 14 + 40 + 32, CsumStart: 54, CsumOffset: 16}},
		{"udp6 super", udp6, offloadSet, virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOUDP,
			GSOSize: 1500 - 40 - 8, HdrLen: 14 + 40 + 8, CsumStart: 54, CsumOffset: 6}},
		{"big arp", bigARP, offloadDrop, virtio.NetHdr{}},
		{"big fragment", fragBig, offloadDrop, virtio.NetHdr{}},
		{"runt", []byte{1, 2, 3}, offloadNone, virtio.NetHdr{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h virtio.NetHdr
			if got := inboundOffload(tc.frame, 1500, &h); got != tc.want || h != tc.hdr {
				t.Fatalf("got %d %+v, want %d %+v", got, h, tc.want, tc.hdr)
			}
			if h.GSOType != virtio.NetHdrGSONone {
				// The switch can cut what it was told.
				if _, ok := planGSO(&h, tc.frame[:min(len(tc.frame), maxSegHdr)], len(tc.frame)); !ok {
					t.Fatal("planGSO refuses the super-frame")
				}
			}
		})
	}
}

func TestFramePortSendCompletesChecksum(t *testing.T) {
	w := &recWriter{}
	p := newFramePort("p", testLogger(t), 0, true, w, nil)
	defer p.Close()
	f := headertest.Frame{Dst: macB, Src: macA, IPv4: &headertest.IPv4Header{Src: ipA, Dst: ipB},
		TCP: &headertest.TCPHeader{SrcPort: 1, DstPort: 2, Csum: headertest.CsumPartial}, Payload: make([]byte, 77)}.Build()
	p.Send([]Frame{{Hdr: virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 16}, Segs: chop(f, 20), Len: len(f)}})
	got := w.wait(t, 1)
	headertest.CheckIPv4(t, got[0][4:], headertest.ExactLength(), headertest.TCP())
	if int(binary.BigEndian.Uint32(got[0])) != len(f) {
		t.Fatal("length prefix wrong")
	}
}

// recWriter records what a port writes.
type recWriter struct {
	mu     sync.Mutex
	frames [][]byte
}

func (w *recWriter) writeFrames(buf []byte, ends []int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := 0
	for _, end := range ends {
		w.frames = append(w.frames, append([]byte{}, buf[start:end]...))
		start = end
	}
	return nil
}

func (w *recWriter) wait(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		if len(w.frames) >= n {
			f := w.frames
			w.mu.Unlock()
			return f
		}
		w.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("frames not written")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFramePortQueueFull(t *testing.T) {
	w := &blockWriter{release: make(chan struct{})}
	p := newFramePort("p", testLogger(t), 0, false, w, nil)
	defer func() { close(w.release); p.Close() }()
	f := udp4Frame(macB, macA, ipA, ipB, 1, 2, 1400)
	frames := make([]Frame, MaxBatch)
	for i := range frames {
		frames[i] = Frame{Segs: [][]byte{f}, Len: len(f)}
	}
	// The writer holds one batch; the queue fills behind it, then drops.
	for i := 0; i < 2*frameSockQueueBytes/len(f)/MaxBatch+2; i++ {
		p.Send(frames)
	}
	if p.Stats().Drops(DropNoBuffer) == 0 {
		t.Fatal("a full queue dropped nothing")
	}
}

type blockWriter struct{ release chan struct{} }

func (w *blockWriter) writeFrames([]byte, []int) error { <-w.release; return nil }

func TestStreamNext(t *testing.T) {
	for _, tc := range []struct {
		in      []byte
		frame   int
		n       int
		wantErr error
	}{
		{nil, 0, 0, nil},
		{[]byte{0, 0, 0}, 0, 0, nil},
		{[]byte{0, 0, 0, 2, 1}, 0, 0, nil},
		{[]byte{0, 0, 0, 2, 1, 2, 9}, 2, 6, nil},
		{[]byte{0, 0, 0, 0}, 0, 0, errStreamZeroLen},
		{[]byte{0, 1, 0, 0x12}, 0, 0, errStreamTooLong},
		{binary.BigEndian.AppendUint32(nil, maxFrameLen), 0, 0, nil},
	} {
		f, n, err := streamNext(tc.in)
		if len(f) != tc.frame || n != tc.n || !errors.Is(err, tc.wantErr) {
			t.Errorf("streamNext(%x) = %d bytes, %d, %v", tc.in, len(f), n, err)
		}
	}
}

func FuzzStreamNext(f *testing.F) {
	f.Add(streamMsg([]byte{1, 2, 3}, make([]byte, 60)))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		rest := b
		for {
			frame, n, err := streamNext(rest)
			if err != nil || n == 0 {
				break
			}
			if n != len(frame)+streamLenSize || len(frame) == 0 || len(frame) > maxFrameLen ||
				int(binary.BigEndian.Uint32(rest)) != len(frame) || &rest[streamLenSize] != &frame[0] {
				t.Fatalf("bad frame: n %d len %d", n, len(frame))
			}
			rest = rest[n:]
		}
	})
}

func FuzzInboundOffload(f *testing.F) {
	tcp4, _ := tcpGSOFrame(gsoSpec{payload: 3000, mss: 100, flags: header.TCPFlagACK}, macA, macB)
	udp6, _ := udpGSOFrame(gsoSpec{v6: true, payload: 3000}, macA, macB)
	f.Add(tcp4, 1500)
	f.Add(udp6, 1280)
	f.Add(udp4Frame(macB, macA, ipA, ipB, 1, 2, 100), 1500)
	f.Fuzz(func(t *testing.T, b []byte, mtu int) {
		mtu = 68 + abs(mtu)%65000
		var h virtio.NetHdr
		switch inboundOffload(b, mtu, &h) {
		case offloadNone, offloadDrop:
			if h != (virtio.NetHdr{}) {
				t.Fatalf("header set: %+v", h)
			}
		case offloadSet:
			if int(h.CsumStart)+int(h.CsumOffset)+2 > len(b) || h.Flags != virtio.NetHdrFNeedsCsum {
				t.Fatalf("checksum outside the frame: %+v, %d bytes", h, len(b))
			}
			if h.GSOType != virtio.NetHdrGSONone {
				if _, ok := planGSO(&h, b[:min(len(b), maxSegHdr)], len(b)); !ok && len(b) <= maxFrameLen {
					t.Fatalf("super-frame the switch cannot cut: %+v", h)
				}
			}
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func TestFrameSockAllocs(t *testing.T) {
	sink := &countPort{name: "sink"}
	p := newFramePort("p", testLogger(t), 0, true, &recWriter{}, nil)
	defer p.Close()
	p.SetPeer(sink)
	frame := udp4Frame(macB, macA, ipA, ipB, 1, 2, 18)
	super, _ := tcpGSOFrame(gsoSpec{payload: 9000, mss: 100, flags: header.TCPFlagACK}, macA, macB)
	msg := streamMsg(frame, frame, super, frame)
	b := newStreamBatch()
	if n := testing.AllocsPerRun(100, func() {
		b.r, b.w = 0, copy(b.buf, msg)
		if err := b.drain(p); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("stream input: %v allocs per batch", n)
	}
	if sink.n.Load() == 0 {
		t.Fatal("nothing went through")
	}
	var h virtio.NetHdr
	if n := testing.AllocsPerRun(100, func() { h = virtio.NetHdr{}; inboundOffload(super, 1500, &h) }); n != 0 {
		t.Fatalf("inboundOffload: %v allocs", n)
	}
	out := []Frame{{Segs: [][]byte{frame}, Len: len(frame)}}
	if n := testing.AllocsPerRun(100, func() { p.enqueue(out) }); n != 0 {
		t.Fatalf("Send: %v allocs per batch", n)
	}
}

// testLogger logs through t (seen with -v or on failure).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }
