package vhostuser

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Request is a frontend request code (vhost-user spec "Front-end message
// types").
type Request uint32

// Frontend request codes. Every code has a row in the message table
// (table.go); codes without a row are unknown to this backend.
const (
	ReqGetFeatures         Request = 1  // VHOST_USER_GET_FEATURES
	ReqSetFeatures         Request = 2  // VHOST_USER_SET_FEATURES
	ReqSetOwner            Request = 3  // VHOST_USER_SET_OWNER
	ReqResetOwner          Request = 4  // VHOST_USER_RESET_OWNER
	ReqSetMemTable         Request = 5  // VHOST_USER_SET_MEM_TABLE
	ReqSetLogBase          Request = 6  // VHOST_USER_SET_LOG_BASE
	ReqSetLogFD            Request = 7  // VHOST_USER_SET_LOG_FD
	ReqSetVringNum         Request = 8  // VHOST_USER_SET_VRING_NUM
	ReqSetVringAddr        Request = 9  // VHOST_USER_SET_VRING_ADDR
	ReqSetVringBase        Request = 10 // VHOST_USER_SET_VRING_BASE
	ReqGetVringBase        Request = 11 // VHOST_USER_GET_VRING_BASE
	ReqSetVringKick        Request = 12 // VHOST_USER_SET_VRING_KICK
	ReqSetVringCall        Request = 13 // VHOST_USER_SET_VRING_CALL
	ReqSetVringErr         Request = 14 // VHOST_USER_SET_VRING_ERR
	ReqGetProtocolFeatures Request = 15 // VHOST_USER_GET_PROTOCOL_FEATURES
	ReqSetProtocolFeatures Request = 16 // VHOST_USER_SET_PROTOCOL_FEATURES
	ReqGetQueueNum         Request = 17 // VHOST_USER_GET_QUEUE_NUM
	ReqSetVringEnable      Request = 18 // VHOST_USER_SET_VRING_ENABLE
	ReqSendRARP            Request = 19 // VHOST_USER_SEND_RARP
	ReqNetSetMTU           Request = 20 // VHOST_USER_NET_SET_MTU
	ReqGetConfig           Request = 24 // VHOST_USER_GET_CONFIG
	ReqSetConfig           Request = 25 // VHOST_USER_SET_CONFIG
	ReqGetMaxMemSlots      Request = 36 // VHOST_USER_GET_MAX_MEM_SLOTS
	ReqAddMemReg           Request = 37 // VHOST_USER_ADD_MEM_REG
	ReqRemMemReg           Request = 38 // VHOST_USER_REM_MEM_REG
	ReqSetStatus           Request = 39 // VHOST_USER_SET_STATUS
	ReqGetStatus           Request = 40 // VHOST_USER_GET_STATUS
)

// String returns the request's spec name without the VHOST_USER_ prefix.
func (r Request) String() string {
	if e := lookup(r); e != nil {
		return e.name
	}
	return "request(" + strconv.FormatUint(uint64(r), 10) + ")"
}

// Wire layout (vhost-user spec "Message Specification"). All numbers are
// in the machine's native byte order; every platform Go supports for this
// package is little-endian, and NativeEndian says what the spec says.
const (
	headerSize = 12

	flagVersionMask = 0x3    // bits 0-1: version
	flagVersion     = 0x1    // the only version
	flagReply       = 1 << 2 // set on every reply from the backend
	flagNeedReply   = 1 << 3 // REPLY_ACK: the frontend wants an ack

	// maxPayload bounds a request payload. The largest request we know is
	// GET_CONFIG/SET_CONFIG (12 + 256 bytes; QEMU's VHOST_USER_PAYLOAD_SIZE
	// is the same union); anything larger is refused before it is read.
	maxPayload = 12 + 256

	// maxFDs is the most fds one message may carry: SET_MEM_TABLE's
	// VHOST_MEMORY_BASELINE_NREGIONS.
	maxFDs = 8

	// maxTableRegions is the number of regions SET_MEM_TABLE can carry.
	maxTableRegions = 8

	// vringFDIndexMask and vringNoFD split the u64 of SET_VRING_KICK/CALL/
	// ERR: bits 0-7 are the ring index, bit 8 (VHOST_USER_VRING_NOFD_MASK)
	// says that no fd is passed and polling is used instead.
	vringFDIndexMask = 0xff
	vringNoFD        = 1 << 8

	// vringFLog is VHOST_VRING_F_LOG, the only vring address flag: log
	// used-ring writes at log_guest_addr (spec "Migration").
	vringFLog = 1 << 0

	// Sizes of the payload structs.
	sizeU64        = 8
	sizeVringState = 8
	sizeVringAddr  = 40
	sizeMemRegion  = 32
	sizeMemTable   = 8 // num regions + padding, then the regions
	sizeMemRegMsg  = 8 + sizeMemRegion
	sizeLog        = 16
	sizeConfigHdr  = 12
)

var ne = binary.NativeEndian

// header is the 12-byte message header.
type header struct {
	Request Request
	Flags   uint32
	Size    uint32
}

// decodeHeader checks a request header (version 1, not a reply, no unknown
// flag, a payload that fits maxPayload) and returns it.
func decodeHeader(b []byte) (header, error) {
	if len(b) < headerSize {
		return header{}, fmt.Errorf("%w: %d header bytes", ErrBadHeader, len(b))
	}
	h := header{Request: Request(ne.Uint32(b[0:])), Flags: ne.Uint32(b[4:]), Size: ne.Uint32(b[8:])}
	if v := h.Flags & flagVersionMask; v != flagVersion {
		return h, fmt.Errorf("%w: %v: version %d, want %d", ErrBadHeader, h.Request, v, flagVersion)
	}
	if h.Flags&flagReply != 0 {
		return h, fmt.Errorf("%w: %v: reply flag set on a request", ErrBadHeader, h.Request)
	}
	if extra := h.Flags &^ (flagVersionMask | flagNeedReply); extra != 0 {
		return h, fmt.Errorf("%w: %v: unknown flags %#x", ErrBadHeader, h.Request, extra)
	}
	if h.Size > maxPayload {
		return h, fmt.Errorf("%w: %v: payload of %d bytes exceeds %d", ErrBadSize, h.Request, h.Size, maxPayload)
	}
	return h, nil
}

// needReply reports whether the frontend set need_reply.
func (h header) needReply() bool { return h.Flags&flagNeedReply != 0 }

// putReplyHeader writes the header of a reply to request r with a payload
// of n bytes. QEMU accepts only flags == VERSION|REPLY on a reply.
func putReplyHeader(b []byte, r Request, n int) {
	ne.PutUint32(b[0:], uint32(r))
	ne.PutUint32(b[4:], flagVersion|flagReply)
	ne.PutUint32(b[8:], uint32(n))
}

// vringState is "a vring state description": struct vhost_vring_state.
type vringState struct {
	Index uint32
	Num   uint32
}

func decodeVringState(b []byte) vringState {
	return vringState{Index: ne.Uint32(b[0:]), Num: ne.Uint32(b[4:])}
}

func (v vringState) encode(b []byte) {
	ne.PutUint32(b[0:], v.Index)
	ne.PutUint32(b[4:], v.Num)
}

// vringAddr is "a vring address description": struct vhost_vring_addr.
// The three ring addresses are frontend user addresses (VIRTIO_F_IOMMU_PLATFORM
// is never negotiated); Log is a guest physical address.
type vringAddr struct {
	Index uint32
	Flags uint32
	Desc  uint64
	Used  uint64
	Avail uint64
	Log   uint64
}

func decodeVringAddr(b []byte) vringAddr {
	return vringAddr{
		Index: ne.Uint32(b[0:]), Flags: ne.Uint32(b[4:]),
		Desc: ne.Uint64(b[8:]), Used: ne.Uint64(b[16:]), Avail: ne.Uint64(b[24:]), Log: ne.Uint64(b[32:]),
	}
}

// vringFD is the u64 of SET_VRING_KICK/CALL/ERR.
type vringFD struct {
	Index uint32
	NoFD  bool
}

func decodeVringFD(v uint64) (vringFD, error) {
	if v&^(vringFDIndexMask|vringNoFD) != 0 {
		return vringFD{}, fmt.Errorf("%w: reserved bits set in %#x", ErrInvalid, v)
	}
	return vringFD{Index: uint32(v & vringFDIndexMask), NoFD: v&vringNoFD != 0}, nil
}

// memRegion is VhostUserMemoryRegion.
type memRegion struct {
	GPA        uint64 // guest_phys_addr
	Size       uint64 // memory_size
	UVA        uint64 // userspace_addr
	MmapOffset uint64 // mmap_offset
}

func decodeMemRegion(b []byte) memRegion {
	return memRegion{GPA: ne.Uint64(b[0:]), Size: ne.Uint64(b[8:]), UVA: ne.Uint64(b[16:]), MmapOffset: ne.Uint64(b[24:])}
}

// memTable is "Memory regions description" (SET_MEM_TABLE).
type memTable struct {
	N       int
	Regions [maxTableRegions]memRegion
}

// decodeMemTable decodes a SET_MEM_TABLE payload. QEMU, DPDK and rust-vmm
// send exactly the regions they announce (8 + 32*n bytes), so any other
// size is refused, as are zero or more than 8 regions.
func decodeMemTable(b []byte) (memTable, error) {
	var t memTable
	if len(b) < sizeMemTable {
		return t, fmt.Errorf("%w: %d bytes", ErrBadSize, len(b))
	}
	n := ne.Uint32(b[0:])
	if n == 0 || n > maxTableRegions {
		return t, fmt.Errorf("%w: %d regions (1..%d)", ErrBadMemory, n, maxTableRegions)
	}
	if want := sizeMemTable + int(n)*sizeMemRegion; len(b) != want {
		return t, fmt.Errorf("%w: %d bytes for %d regions, want %d", ErrBadSize, len(b), n, want)
	}
	t.N = int(n)
	for i := 0; i < t.N; i++ {
		t.Regions[i] = decodeMemRegion(b[sizeMemTable+i*sizeMemRegion:])
	}
	return t, nil
}

// decodeMemRegMsg decodes VhostUserMemRegMsg (ADD_MEM_REG, REM_MEM_REG):
// 64 bits of padding, then one region.
func decodeMemRegMsg(b []byte) memRegion {
	return decodeMemRegion(b[8:])
}

// logArea is "Log description" (SET_LOG_BASE with LOG_SHMFD). QEMU sends
// this 16-byte struct even though the spec's table says u64.
type logArea struct {
	Size   uint64 // mmap_size
	Offset uint64 // mmap_offset
}

func decodeLogArea(b []byte) logArea {
	return logArea{Size: ne.Uint64(b[0:]), Offset: ne.Uint64(b[8:])}
}
