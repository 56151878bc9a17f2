package vhostusertest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// nativeEndian: vhost-user numbers are in the machine's byte order.
var nativeEndian = binary.NativeEndian

// Wire constants of the vhost-user spec, written out again here (not
// imported from vhostuser) so the frontend checks the backend's codec
// rather than sharing its mistakes.
const (
	headerSize    = 12
	flagVersion   = 0x1
	flagReply     = 0x4
	flagNeedReply = 0x8
	vringNoFD     = 1 << 8
	vringFLog     = 1 << 0
	uvaBase       = 0x7f00_0000_0000 // user addresses of region i start at uvaBase + i<<36
	maxReplySize  = 4096
)

// Options configure a Frontend. The zero value is two 16 MiB regions, one
// queue pair of 256 entries, 2 KiB buffers and eventfds.
type Options struct {
	// Regions is the number of guest memory regions (memfds); default 2.
	// Rings are spread over them round-robin, so several queues exercise
	// several regions.
	Regions int
	// RegionSize is the size of each region; default 16 MiB. Region i is
	// at guest physical address i*RegionSize (contiguous guest memory,
	// as one RAM block split in pieces) and user address uvaBase+i<<36.
	RegionSize uint64
	// ProtocolFeatures the frontend is willing to ack; zero means all it
	// knows: MQ, LOG_SHMFD, RARP, REPLY_ACK, MTU, CONFIGURE_MEM_SLOTS,
	// STATUS.
	ProtocolFeatures uint64
	// QueuePairs is the number of queue pairs SetupQueues starts; default 1.
	QueuePairs int
	// SlotSize is the size of every buffer (descriptor) the drivers add;
	// default 2048.
	SlotSize uint32
	// RxBufLen is the total size of each receive chain without
	// VIRTIO_NET_F_MRG_RXBUF (split in SlotSize descriptors); default 12 +
	// 1514 + 4 rounded up to whole slots. With MRG_RXBUF every receive
	// chain is one SlotSize buffer, as Linux posts.
	RxBufLen uint32
	// RxIndirect posts receive chains through indirect tables.
	RxIndirect bool
	// KeepRxBuffers posts receive buffers without zeroing them first, as
	// a real driver does (virtiotest.DriverOptions.KeepIn): for
	// benchmarks, where zeroing a 64 KiB frame's buffers costs the
	// receiving guest as much as the backend's copy into them. Tests that
	// compare received bytes leave it off.
	KeepRxBuffers bool
	// Pipes uses pipes for kicks and calls instead of eventfds (what QEMU
	// does on macOS; always the case outside Linux).
	Pipes bool
	// Memory is where guest memory lives: memfds (the default, QEMU's
	// memory-backend-memfd), or POSIX shared memory objects (MemoryShm,
	// QEMU's memory-backend-shm).
	Memory MemoryKind
	// SingleFile carves every region out of one shared memory file, at
	// increasing mmap offsets, and sends that one fd for each region (what
	// crosvm's GuestMemory does).
	SingleFile bool
	// GPAs are the guest physical addresses of the regions; default
	// contiguous from 0 (region i at i*RegionSize).
	GPAs []uint64
	// Timeout bounds every blocking operation; default 10 s.
	Timeout time.Duration
}

// Ring is one vring as the frontend (the guest driver plus QEMU) sees it.
type Ring struct {
	Index  int
	Driver *virtiotest.Driver
	kickR  int
	kickW  int
	callR  int
	callW  int
	evfd   bool
	calls  uint64
	kicks  uint64
	region *Region
}

// Frontend is an in-process vhost-user frontend: guest memory in memfds,
// kick and call eventfds (or pipes), a real unix socket, and one
// virtiotest.Driver per ring playing the guest's virtio-net driver. It
// sends messages in QEMU 7.2's order. A Frontend is used by one goroutine
// at a time, except that each queue pair's data path may have a goroutine
// of its own (pairs.go).
type Frontend struct {
	t        testing.TB
	opts     Options
	conn     *net.UnixConn
	regions  []*Region
	rings    []*Ring
	offered  uint64 // GET_FEATURES
	features uint64 // SET_FEATURES
	proto    uint64 // SET_PROTOCOL_FEATURES
	memSent  bool
	buf      []byte
	extraFDs []int // notifier fds not tied to a ring (QEMU's masked and error notifiers)
	sent     []Sent

	// Each queue pair's data-path state (pairs.go).
	pairs []pairState
	// Receive buffers in chosen regions (SetRxRegion): per queue pair.
	rxPools    map[int]*rxPool
	rxInRegion regionCounts
}

// New returns a Frontend with its guest memory allocated and no
// connection; t.Cleanup closes it.
func New(t testing.TB, opts Options) *Frontend {
	t.Helper()
	if opts.Regions == 0 {
		opts.Regions = 2
	}
	if opts.RegionSize == 0 {
		opts.RegionSize = 16 << 20
	}
	if opts.ProtocolFeatures == 0 {
		opts.ProtocolFeatures = vhostuser.SupportedProtocolFeatures
	}
	if opts.QueuePairs == 0 {
		opts.QueuePairs = 1
	}
	if opts.SlotSize == 0 {
		opts.SlotSize = 2048
	}
	if opts.RxBufLen == 0 {
		opts.RxBufLen = (virtio.NetHdrSize + 1514 + 4 + opts.SlotSize - 1) / opts.SlotSize * opts.SlotSize
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	f := &Frontend{t: t, opts: opts, buf: make([]byte, headerSize+maxReplySize)}
	t.Cleanup(f.Close)
	gpa := func(i int) uint64 {
		if i < len(opts.GPAs) {
			return opts.GPAs[i]
		}
		return uint64(i) * opts.RegionSize
	}
	if opts.SingleFile {
		if err := f.newSingleFile(opts.Regions, opts.RegionSize, gpa); err != nil {
			t.Fatalf("vhostusertest: %v", err)
		}
		return f
	}
	for i := 0; i < opts.Regions; i++ {
		if _, err := f.newRegion(gpa(i), opts.RegionSize); err != nil {
			t.Fatalf("vhostusertest: %v", err)
		}
	}
	return f
}

// Regions returns the guest memory regions.
func (f *Frontend) Regions() []*Region { return f.regions }

// Ring returns ring idx (2k: receiveq k, 2k+1: transmitq k) after
// SetupQueues.
func (f *Frontend) Ring(idx int) *Ring { return f.rings[idx] }

// Conn returns the socket, for tests that write raw bytes.
func (f *Frontend) Conn() *net.UnixConn { return f.conn }

// Dial connects to a backend listening at path, closing any previous
// connection.
func (f *Frontend) Dial(path string) error {
	f.Disconnect()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("vhostusertest: dial: %w", err)
	}
	f.conn = c
	return nil
}

// Accept takes the next backend connection on l (the backend in the client
// role connects to the frontend's socket, like QEMU's server=on).
func (f *Frontend) Accept(l *net.UnixListener) error {
	f.Disconnect()
	_ = l.SetDeadline(time.Now().Add(f.opts.Timeout))
	c, err := l.AcceptUnix()
	if err != nil {
		return fmt.Errorf("vhostusertest: accept: %w", err)
	}
	f.conn = c
	return nil
}

// Disconnect closes the connection (as a frontend that goes away) and
// forgets the session state; memory, rings and their fds stay.
func (f *Frontend) Disconnect() {
	if f.conn != nil {
		_ = f.conn.Close()
		f.conn = nil
	}
	f.features, f.proto, f.offered, f.memSent = 0, 0, 0, false
}

// Close disconnects and releases memory and fds.
func (f *Frontend) Close() {
	f.Disconnect()
	for _, r := range f.rings {
		r.close()
	}
	f.rings = nil
	for _, fd := range f.extraFDs {
		_ = unix.Close(fd)
	}
	f.extraFDs = nil
	for _, r := range f.regions {
		r.release()
	}
	f.regions = nil
}

func (r *Ring) close() {
	for _, fd := range []int{r.kickR, r.kickW, r.callR, r.callW} {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}
	r.kickR, r.kickW, r.callR, r.callW = -1, -1, -1, -1
}

// Messages.

// Sent is one request the frontend sent (WriteMessage).
type Sent struct {
	Request vhostuser.Request
	Flags   uint32 // as sent, with the version bit
	FDs     int
}

// String is the request's name, with "+reply" when need_reply was set and
// "+fd"/"+Nfd" for fds: GET_FEATURES, ADD_MEM_REG+reply+fd.
func (s Sent) String() string {
	n := s.Request.String()
	if s.Flags&flagNeedReply != 0 {
		n += "+reply"
	}
	switch {
	case s.FDs == 1:
		n += "+fd"
	case s.FDs > 1:
		n += fmt.Sprintf("+%dfd", s.FDs)
	}
	return n
}

// Sent returns the requests sent since the last ResetSent, in order.
func (f *Frontend) Sent() []Sent { return append([]Sent(nil), f.sent...) }

// ResetSent forgets the requests sent so far.
func (f *Frontend) ResetSent() { f.sent = f.sent[:0] }

// WriteMessage sends one request with the given flags (the version bit is
// added) and fds, raw: nothing is checked and no reply is read.
func (f *Frontend) WriteMessage(req vhostuser.Request, flags uint32, payload []byte, fds ...int) error {
	f.sent = append(f.sent, Sent{Request: req, Flags: flags | flagVersion, FDs: len(fds)})
	b := make([]byte, headerSize+len(payload))
	nativeEndian.PutUint32(b[0:], uint32(req))
	nativeEndian.PutUint32(b[4:], flags|flagVersion)
	nativeEndian.PutUint32(b[8:], uint32(len(payload)))
	copy(b[headerSize:], payload)
	return f.WriteRaw(b, fds...)
}

// WriteRaw writes b to the socket in one sendmsg, with fds as SCM_RIGHTS.
func (f *Frontend) WriteRaw(b []byte, fds ...int) error {
	if f.conn == nil {
		return errors.New("vhostusertest: not connected")
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_ = f.conn.SetWriteDeadline(time.Now().Add(f.opts.Timeout))
	n, _, err := f.conn.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("vhostusertest: write: %w", err)
	}
	if n != len(b) {
		return fmt.Errorf("vhostusertest: short write %d/%d", n, len(b))
	}
	return nil
}

// ReadReply reads one reply and checks that it answers req with QEMU's
// rules (flags exactly VERSION|REPLY). It returns the payload.
func (f *Frontend) ReadReply(req vhostuser.Request) ([]byte, error) {
	if f.conn == nil {
		return nil, errors.New("vhostusertest: not connected")
	}
	_ = f.conn.SetReadDeadline(time.Now().Add(f.opts.Timeout))
	h := f.buf[:headerSize]
	if _, err := io.ReadFull(f.conn, h); err != nil {
		return nil, fmt.Errorf("vhostusertest: reply to %v: %w", req, err)
	}
	got := vhostuser.Request(nativeEndian.Uint32(h[0:]))
	flags := nativeEndian.Uint32(h[4:])
	size := nativeEndian.Uint32(h[8:])
	if size > maxReplySize {
		return nil, fmt.Errorf("vhostusertest: reply to %v of %d bytes", req, size)
	}
	p := f.buf[headerSize : headerSize+int(size)]
	if _, err := io.ReadFull(f.conn, p); err != nil {
		return nil, fmt.Errorf("vhostusertest: reply to %v: %w", req, err)
	}
	if got != req || flags != flagVersion|flagReply {
		return nil, fmt.Errorf("vhostusertest: reply %v flags %#x to %v", got, flags, req)
	}
	return append([]byte(nil), p...), nil
}

// Request sends req as QEMU does: with need_reply when REPLY_ACK was
// negotiated (for requests without a reply of their own), and reads the
// reply or the ack. hasReply says the request has its own reply, which is
// returned. A non-zero ack is an error.
func (f *Frontend) Request(req vhostuser.Request, hasReply bool, payload []byte, fds ...int) ([]byte, error) {
	ack := !hasReply && f.proto&vhostuser.ProtocolFReplyAck != 0
	var flags uint32
	if ack {
		flags = flagNeedReply
	}
	if err := f.WriteMessage(req, flags, payload, fds...); err != nil {
		return nil, err
	}
	if !hasReply && !ack {
		return nil, nil
	}
	p, err := f.ReadReply(req)
	if err != nil {
		return nil, err
	}
	if ack {
		if len(p) != 8 {
			return nil, fmt.Errorf("vhostusertest: ack of %v has %d bytes", req, len(p))
		}
		if v := nativeEndian.Uint64(p); v != 0 {
			return nil, fmt.Errorf("vhostusertest: %v failed (ack %d)", req, v)
		}
	}
	return p, nil
}

// WaitClosed waits until the backend closes the connection, reading and
// dropping whatever it still sends (a nack, say). It fails after Timeout.
func (f *Frontend) WaitClosed() error {
	if f.conn == nil {
		return errors.New("vhostusertest: not connected")
	}
	_ = f.conn.SetReadDeadline(time.Now().Add(f.opts.Timeout))
	var b [256]byte
	for {
		_, err := f.conn.Read(b[:])
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("vhostusertest: connection not closed: %w", err)
		}
	}
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	nativeEndian.PutUint64(b, v)
	return b
}

func vringState(idx int, num uint32) []byte {
	b := make([]byte, 8)
	nativeEndian.PutUint32(b[0:], uint32(idx))
	nativeEndian.PutUint32(b[4:], num)
	return b
}

func (f *Frontend) getU64(req vhostuser.Request) (uint64, error) {
	p, err := f.Request(req, true, nil)
	if err != nil {
		return 0, err
	}
	if len(p) != 8 {
		return 0, fmt.Errorf("vhostusertest: %v reply of %d bytes", req, len(p))
	}
	return nativeEndian.Uint64(p), nil
}

// GetFeatures sends GET_FEATURES.
func (f *Frontend) GetFeatures() (uint64, error) { return f.getU64(vhostuser.ReqGetFeatures) }

// SetFeatures sends SET_FEATURES; the Rings' drivers follow v.
func (f *Frontend) SetFeatures(v uint64) error {
	if _, err := f.Request(vhostuser.ReqSetFeatures, false, u64(v)); err != nil {
		return err
	}
	f.features = v
	for _, r := range f.rings {
		r.Driver.Config(v)
	}
	return nil
}

// Features returns the features acked with SET_FEATURES.
func (f *Frontend) Features() uint64 { return f.features }

// ProtocolFeatures returns the protocol features acked.
func (f *Frontend) ProtocolFeatures() uint64 { return f.proto }

// GetProtocolFeatures sends GET_PROTOCOL_FEATURES.
func (f *Frontend) GetProtocolFeatures() (uint64, error) {
	return f.getU64(vhostuser.ReqGetProtocolFeatures)
}

// SetProtocolFeatures sends SET_PROTOCOL_FEATURES.
func (f *Frontend) SetProtocolFeatures(v uint64) error {
	if _, err := f.Request(vhostuser.ReqSetProtocolFeatures, false, u64(v)); err != nil {
		return err
	}
	f.proto = v
	return nil
}

// Negotiate runs the start of a QEMU 7.2 session: GET_FEATURES,
// GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, SET_OWNER,
// GET_FEATURES, then SET_FEATURES with features & offered (plus
// VHOST_USER_F_PROTOCOL_FEATURES when offered). features == 0 acks all the
// backend offers except VHOST_F_LOG_ALL.
func (f *Frontend) Negotiate(features uint64) error {
	off, err := f.GetFeatures()
	if err != nil {
		return err
	}
	f.offered = off
	if off&vhostuser.FProtocolFeatures != 0 {
		p, err := f.GetProtocolFeatures()
		if err != nil {
			return err
		}
		if err := f.SetProtocolFeatures(p & f.opts.ProtocolFeatures); err != nil {
			return err
		}
		if f.proto&vhostuser.ProtocolFMQ != 0 {
			n, err := f.getU64(vhostuser.ReqGetQueueNum)
			if err != nil {
				return err
			}
			// The number of virtqueues (spec "Query how many queues the
			// back-end supports"): 2 per queue pair.
			if n < 2*uint64(f.opts.QueuePairs) {
				return fmt.Errorf("vhostusertest: backend serves %d queues, want %d", n, 2*f.opts.QueuePairs)
			}
		}
		if f.proto&vhostuser.ProtocolFConfigureMemSlots != 0 {
			n, err := f.getU64(vhostuser.ReqGetMaxMemSlots)
			if err != nil {
				return err
			}
			if n < uint64(len(f.regions)) {
				return fmt.Errorf("vhostusertest: backend takes %d memory slots, want %d", n, len(f.regions))
			}
		}
	}
	if _, err := f.Request(vhostuser.ReqSetOwner, false, nil); err != nil {
		return err
	}
	if _, err := f.GetFeatures(); err != nil {
		return err
	}
	if features == 0 {
		features = off &^ vhostuser.FLogAll
	}
	ack := features & off
	if off&vhostuser.FProtocolFeatures != 0 {
		ack |= vhostuser.FProtocolFeatures
	}
	return f.SetFeatures(ack)
}

// SetupQueues sends the memory (if not sent yet) and starts pairs queue
// pairs of size entries as QEMU does at DRIVER_OK: per ring SET_VRING_NUM,
// SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL, then
// SET_VRING_ENABLE 1 (with protocol features) and SET_STATUS (with
// STATUS). Receive queues get buffers posted first. Rings are laid out afresh,
// so it also restarts queues stopped with GET_VRING_BASE.
func (f *Frontend) SetupQueues(pairs int, size uint16) error {
	if !f.memSent {
		if err := f.SendMemory(); err != nil {
			return err
		}
	}
	return f.StartRings(pairs, size)
}

// StartRings is SetupQueues without the memory table, for tests of other
// message orders (rings set up before the memory arrives).
func (f *Frontend) StartRings(pairs int, size uint16) error {
	if err := f.PrepareRings(pairs, size); err != nil {
		return err
	}
	for _, r := range f.rings {
		// A new ring: avail index 0; packed, position 0 with both wrap
		// counters at 1 (virtio 1.2 §2.8.1).
		base := uint32(0)
		if r.Driver.Packed() {
			base = 0x8000 | 0x8000<<16
		}
		if err := f.startRing(r, base); err != nil {
			return err
		}
	}
	if f.features&vhostuser.FProtocolFeatures != 0 {
		for i := range f.rings {
			if err := f.SetVringEnable(i, true); err != nil {
				return err
			}
		}
	}
	if f.proto&vhostuser.ProtocolFStatus != 0 {
		// ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
		if _, err := f.Request(vhostuser.ReqSetStatus, false, u64(1|2|8|4)); err != nil {
			return err
		}
	}
	return nil
}

// PrepareRings lays out pairs queue pairs of size entries afresh (rings,
// kick and call fds) and posts receive buffers, without a message: the
// guest driver's side of a device start. Launchers then send the ring
// messages in their own order.
func (f *Frontend) PrepareRings(pairs int, size uint16) error {
	for _, r := range f.rings {
		r.close()
	}
	f.rings = nil
	f.pairs, f.rxPools = make([]pairState, pairs), nil
	for _, r := range f.regions {
		r.next = 0
	}
	for i := 0; i < 2*pairs; i++ {
		r, err := f.newRing(i, size)
		if err != nil {
			return err
		}
		f.rings = append(f.rings, r)
	}
	// Receive buffers go in before the rings start, so a device can
	// write as soon as it has a ring (the kicks wait in the fds).
	for i := 0; i < pairs; i++ {
		if err := f.FillRx(i); err != nil {
			return err
		}
	}
	return nil
}

// newRing lays out ring idx in region idx % len(regions).
func (f *Frontend) newRing(idx int, size uint16) (*Ring, error) {
	reg := f.regions[idx%len(f.regions)]
	need := uint64(16*int(size)+6+2*int(size)+6+8*int(size)+128) + 4*uint64(size)*uint64(f.opts.SlotSize)
	need = (need + 4095) &^ 4095
	if reg.next+need > reg.Size {
		return nil, fmt.Errorf("vhostusertest: region %#x has no room for ring %d (%d bytes)", reg.GPA, idx, need)
	}
	mem := reg.Data[reg.next : reg.next+need : reg.next+need]
	d, err := virtiotest.NewDriver(mem, reg.GPA+reg.next, size, virtiotest.DriverOptions{SlotSize: f.opts.SlotSize,
		Packed: f.features&virtio.FRingPacked != 0, KeepIn: f.opts.KeepRxBuffers})
	if err != nil {
		return nil, err
	}
	reg.next += need
	d.Config(f.features)
	r := &Ring{Index: idx, Driver: d, region: reg, kickR: -1, kickW: -1, callR: -1, callW: -1}
	mk := newEventFD
	if f.opts.Pipes {
		mk = newPipe
	}
	if r.kickR, r.kickW, err = mk(); err != nil {
		return nil, err
	}
	if r.callR, r.callW, err = mk(); err != nil {
		r.close()
		return nil, err
	}
	r.evfd = r.kickR == r.kickW
	if r.evfd {
		r.kickW, r.callW = -1, -1 // same fds: close once
	}
	return r, nil
}

func (r *Ring) kickFD() int {
	if r.evfd {
		return r.kickR
	}
	return r.kickW
}

func (r *Ring) callFD() int {
	if r.evfd {
		return r.callR
	}
	return r.callW
}

// baseOf is the SET_VRING_BASE value for ring r resuming at avail index
// (packed: position) base. Packed rings carry the used position too, in
// bits 16-31, as QEMU sends them (vhost-user spec "Vring descriptor
// indices for packed virtqueues"); the driver's used position is the
// device's when nothing is in flight.
func (f *Frontend) baseOf(r *Ring, base uint16) uint32 {
	if r.Driver.Packed() {
		return uint32(base) | uint32(r.Driver.LastUsed())<<16
	}
	return uint32(base)
}

// startRing sends NUM, BASE, ADDR, KICK and CALL for r.
func (f *Frontend) startRing(r *Ring, base uint32) error {
	if _, err := f.Request(vhostuser.ReqSetVringNum, false, vringState(r.Index, uint32(r.Driver.Size()))); err != nil {
		return err
	}
	if _, err := f.Request(vhostuser.ReqSetVringBase, false, vringState(r.Index, base)); err != nil {
		return err
	}
	if err := f.SetVringAddr(r.Index, false, 0); err != nil {
		return err
	}
	if _, err := f.Request(vhostuser.ReqSetVringKick, false, u64(uint64(r.Index)), r.kickR); err != nil {
		return err
	}
	_, err := f.Request(vhostuser.ReqSetVringCall, false, u64(uint64(r.Index)), r.callFD())
	return err
}

// SetVringAddr sends SET_VRING_ADDR for ring idx with user addresses; log
// sets VHOST_VRING_F_LOG with log_guest_addr logGPA (0: the used ring's
// guest address, as QEMU sends).
func (f *Frontend) SetVringAddr(idx int, log bool, logGPA uint64) error {
	d := f.rings[idx].Driver
	b := make([]byte, 40)
	nativeEndian.PutUint32(b[0:], uint32(idx))
	if log {
		nativeEndian.PutUint32(b[4:], vringFLog)
		if logGPA == 0 {
			logGPA = d.UsedGPA()
		}
	}
	nativeEndian.PutUint64(b[8:], f.UVA(d.DescGPA()))
	nativeEndian.PutUint64(b[16:], f.UVA(d.UsedGPA()))
	nativeEndian.PutUint64(b[24:], f.UVA(d.AvailGPA()))
	nativeEndian.PutUint64(b[32:], logGPA)
	_, err := f.Request(vhostuser.ReqSetVringAddr, false, b)
	return err
}

// SetVringEnable sends SET_VRING_ENABLE.
func (f *Frontend) SetVringEnable(idx int, on bool) error {
	var v uint32
	if on {
		v = 1
	}
	_, err := f.Request(vhostuser.ReqSetVringEnable, false, vringState(idx, v))
	return err
}

// SetVringKickNoFD sends SET_VRING_KICK with VHOST_USER_VRING_NOFD_MASK:
// the backend polls ring idx.
func (f *Frontend) SetVringKickNoFD(idx int) error {
	_, err := f.Request(vhostuser.ReqSetVringKick, false, u64(uint64(idx)|vringNoFD))
	return err
}

// GetVringBase sends GET_VRING_BASE, which stops ring idx, and returns the
// next avail index the backend would have used.
func (f *Frontend) GetVringBase(idx int) (uint16, error) {
	p, err := f.Request(vhostuser.ReqGetVringBase, true, vringState(idx, 0))
	if err != nil {
		return 0, err
	}
	if len(p) != 8 || nativeEndian.Uint32(p) != uint32(idx) {
		return 0, fmt.Errorf("vhostusertest: GET_VRING_BASE reply % x", p)
	}
	return uint16(nativeEndian.Uint32(p[4:])), nil
}

// RestartRing restarts a ring stopped by GET_VRING_BASE at avail index
// base, on the same ring memory (QEMU's order: NUM, BASE, ADDR, KICK,
// CALL).
func (f *Frontend) RestartRing(idx int, base uint16) error {
	return f.startRing(f.rings[idx], f.baseOf(f.rings[idx], base))
}

// ResetOwner sends RESET_OWNER.
func (f *Frontend) ResetOwner() error {
	_, err := f.Request(vhostuser.ReqResetOwner, false, nil)
	return err
}

// SetLogBase creates a log area of size bytes (a memfd), sends it with
// SET_LOG_BASE and returns the bitmap.
func (f *Frontend) SetLogBase(size uint64) ([]byte, error) {
	fd, data, err := newSharedMemory("vhostusertest-log", int(size))
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := make([]byte, 16)
	nativeEndian.PutUint64(b[0:], size)
	nativeEndian.PutUint64(b[8:], 0)
	p, err := f.Request(vhostuser.ReqSetLogBase, true, b, fd)
	if err != nil {
		_ = unix.Munmap(data)
		return nil, err
	}
	// The reply echoes the log description (what rust-vmm's frontend
	// reads since vhost 0.16; QEMU only checks the request code).
	if len(p) != 16 || nativeEndian.Uint64(p) != size || nativeEndian.Uint64(p[8:]) != 0 {
		_ = unix.Munmap(data)
		return nil, fmt.Errorf("vhostusertest: SET_LOG_BASE reply % x", p)
	}
	f.t.Cleanup(func() { _ = unix.Munmap(data) })
	return data, nil
}

// Kick signals ring idx's kick fd.
func (f *Frontend) Kick(idx int) error {
	r := f.rings[idx]
	r.kicks++
	return signal(r.kickFD())
}

// Kicks returns how many kicks the frontend sent on ring idx.
func (f *Frontend) Kicks(idx int) uint64 { return f.rings[idx].kicks }

// Calls drains ring idx's call fd and returns how many calls the backend
// has made on it so far.
func (f *Frontend) Calls(idx int) uint64 {
	r := f.rings[idx]
	n, err := drain(r.callR, r.evfd)
	if err != nil {
		f.t.Errorf("vhostusertest: ring %d: %v", idx, err)
	}
	r.calls += n
	return r.calls
}

// WaitCall waits until the backend calls on ring idx (or Timeout passes)
// and returns the number of calls so far.
func (f *Frontend) WaitCall(idx int) (uint64, error) {
	return f.WaitCallFor(idx, f.opts.Timeout)
}

// WaitCallFor is WaitCall with its own timeout.
func (f *Frontend) WaitCallFor(idx int, timeout time.Duration) (uint64, error) {
	r := f.rings[idx]
	before := r.calls
	deadline := time.Now().Add(timeout)
	for {
		if n := f.Calls(idx); n > before {
			return n, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return r.calls, fmt.Errorf("vhostusertest: no call on ring %d: %w", idx, os.ErrDeadlineExceeded)
		}
		if _, err := waitReadable(r.callR, left); err != nil {
			return r.calls, err
		}
	}
}

// SetVringCall gives ring idx a new call fd (QEMU does this on a running
// ring when the guest masks or unmasks its interrupt) and closes the old
// one on the frontend side.
func (f *Frontend) SetVringCall(idx int) error {
	r := f.rings[idx]
	mk := newEventFD
	if f.opts.Pipes {
		mk = newPipe
	}
	cr, cw, err := mk()
	if err != nil {
		return err
	}
	send := cw
	if cr == cw {
		cw = -1
	}
	if _, err := f.Request(vhostuser.ReqSetVringCall, false, u64(uint64(idx)), send); err != nil {
		_ = unix.Close(cr)
		if cw >= 0 {
			_ = unix.Close(cw)
		}
		return err
	}
	f.Calls(idx) // count what the old fd got
	for _, fd := range []int{r.callR, r.callW} {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}
	r.callR, r.callW = cr, cw
	return nil
}
