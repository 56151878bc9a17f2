package vhostuser

import "fmt"

// The message table: one row per request the backend implements. The
// dispatcher (Session.dispatch in session.go) runs the same steps for every
// row: header check, fd count, exact size, decode, handler (which validates,
// then acts), reply or ack, close the fds the handler did not keep. Nothing
// about a request lives in a switch statement.

// payloadKind is the shape of a request payload; it fixes the size rule and
// the decoder.
type payloadKind uint8

const (
	payloadNone       payloadKind = iota // no payload ("N/A")
	payloadU64                           // "A single 64-bit integer"
	payloadVringState                    // "A vring state description"
	payloadVringAddr                     // "A vring address description"
	payloadMemTable                      // "Memory regions description": 8 + 32*n bytes, 1 <= n <= 8
	payloadMemReg                        // "Single memory region description"
	payloadLog                           // "Log description"
	payloadConfig                        // "Virtio device config space": 12 + size bytes, size <= 256
)

// payload holds one decoded request; the field that matches the row's kind
// is valid. It lives in the Session and is reused (no allocation per
// message).
type payload struct {
	U64    uint64
	State  vringState
	Addr   vringAddr
	Table  memTable
	Region memRegion
	Log    logArea
	Raw    []byte // payloadConfig: the bytes as received
}

// checkSize enforces the exact payload size of kind k (vhost-user spec
// "Payload"). Sizes QEMU 7.2, DPDK virtio_user and rust-vmm send are
// exactly these.
func (k payloadKind) checkSize(n int) error {
	want := 0
	switch k {
	case payloadNone:
		want = 0
	case payloadU64:
		want = sizeU64
	case payloadVringState:
		want = sizeVringState
	case payloadVringAddr:
		want = sizeVringAddr
	case payloadMemReg:
		want = sizeMemRegMsg
	case payloadLog:
		want = sizeLog
	case payloadMemTable:
		if n < sizeMemTable+sizeMemRegion || n > sizeMemTable+maxTableRegions*sizeMemRegion || (n-sizeMemTable)%sizeMemRegion != 0 {
			return fmt.Errorf("%w: %d bytes is not a memory table of 1..%d regions", ErrBadSize, n, maxTableRegions)
		}
		return nil
	case payloadConfig:
		if n < sizeConfigHdr || n > maxPayload {
			return fmt.Errorf("%w: %d bytes is not a config space message", ErrBadSize, n)
		}
		return nil
	}
	if n != want {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadSize, n, want)
	}
	return nil
}

// decode fills the field of p that matches k. The size was checked.
func (k payloadKind) decode(b []byte, p *payload) error {
	switch k {
	case payloadU64:
		p.U64 = ne.Uint64(b)
	case payloadVringState:
		p.State = decodeVringState(b)
	case payloadVringAddr:
		p.Addr = decodeVringAddr(b)
	case payloadMemReg:
		p.Region = decodeMemRegMsg(b)
	case payloadLog:
		p.Log = decodeLogArea(b)
	case payloadMemTable:
		t, err := decodeMemTable(b)
		if err != nil {
			return err
		}
		p.Table = t
	case payloadConfig:
		if sz := ne.Uint32(b[4:]); int(sz) != len(b)-sizeConfigHdr {
			return fmt.Errorf("%w: config size field %d, payload carries %d", ErrBadSize, sz, len(b)-sizeConfigHdr)
		}
		p.Raw = b
	}
	return nil
}

// handlerFunc validates a decoded request against the session state and
// acts on it. For a request with its own reply it returns the reply payload
// (a slice of the session's reply buffer). It keeps an fd with fds.take;
// the dispatcher closes every other one.
type handlerFunc func(s *Session, p *payload, fds *fdSet) (reply []byte, err error)

// entry is one row of the message table.
type entry struct {
	req    Request
	name   string
	kind   payloadKind
	minFDs int
	maxFDs int
	// proto is the protocol feature the frontend must have negotiated
	// with SET_PROTOCOL_FEATURES (0: none).
	proto uint64
	// reply: the request has its own reply (spec "Communication"); the
	// REPLY_ACK ack is then never sent ("brings no behavioural change").
	reply  bool
	handle handlerFunc
}

// table is indexed by request code; rows with a nil handler are unknown.
var table [41]entry

func init() {
	for _, e := range []entry{
		{ReqGetFeatures, "GET_FEATURES", payloadNone, 0, 0, 0, true, (*Session).getFeatures},
		{ReqSetFeatures, "SET_FEATURES", payloadU64, 0, 0, 0, false, (*Session).setFeatures},
		{ReqSetOwner, "SET_OWNER", payloadNone, 0, 0, 0, false, (*Session).setOwner},
		{ReqResetOwner, "RESET_OWNER", payloadNone, 0, 0, 0, false, (*Session).resetOwner},
		{ReqSetMemTable, "SET_MEM_TABLE", payloadMemTable, 1, maxFDs, 0, false, (*Session).setMemTable},
		{ReqSetLogBase, "SET_LOG_BASE", payloadLog, 1, 1, ProtocolFLogShmfd, true, (*Session).setLogBase},
		{ReqSetLogFD, "SET_LOG_FD", payloadNone, 1, 1, 0, false, (*Session).setLogFD},
		{ReqSetVringNum, "SET_VRING_NUM", payloadVringState, 0, 0, 0, false, (*Session).setVringNum},
		{ReqSetVringAddr, "SET_VRING_ADDR", payloadVringAddr, 0, 0, 0, false, (*Session).setVringAddr},
		{ReqSetVringBase, "SET_VRING_BASE", payloadVringState, 0, 0, 0, false, (*Session).setVringBase},
		{ReqGetVringBase, "GET_VRING_BASE", payloadVringState, 0, 0, 0, true, (*Session).getVringBase},
		{ReqSetVringKick, "SET_VRING_KICK", payloadU64, 0, 1, 0, false, (*Session).setVringKick},
		{ReqSetVringCall, "SET_VRING_CALL", payloadU64, 0, 1, 0, false, (*Session).setVringCall},
		{ReqSetVringErr, "SET_VRING_ERR", payloadU64, 0, 1, 0, false, (*Session).setVringErr},
		{ReqGetProtocolFeatures, "GET_PROTOCOL_FEATURES", payloadNone, 0, 0, 0, true, (*Session).getProtocolFeatures},
		{ReqSetProtocolFeatures, "SET_PROTOCOL_FEATURES", payloadU64, 0, 0, 0, false, (*Session).setProtocolFeatures},
		{ReqGetQueueNum, "GET_QUEUE_NUM", payloadNone, 0, 0, ProtocolFMQ, true, (*Session).getQueueNum},
		{ReqSetVringEnable, "SET_VRING_ENABLE", payloadVringState, 0, 0, 0, false, (*Session).setVringEnable},
		{ReqSendRARP, "SEND_RARP", payloadU64, 0, 0, ProtocolFRARP, false, (*Session).sendRARP},
		{ReqNetSetMTU, "NET_SET_MTU", payloadU64, 0, 0, ProtocolFMTU, false, (*Session).netSetMTU},
		// The virtio-net config space (netconfig.go).
		{ReqGetConfig, "GET_CONFIG", payloadConfig, 0, 0, ProtocolFConfig, true, (*Session).getConfig},
		{ReqSetConfig, "SET_CONFIG", payloadConfig, 0, 0, ProtocolFConfig, false, (*Session).setConfig},
		{ReqGetMaxMemSlots, "GET_MAX_MEM_SLOTS", payloadNone, 0, 0, ProtocolFConfigureMemSlots, true, (*Session).getMaxMemSlots},
		{ReqAddMemReg, "ADD_MEM_REG", payloadMemReg, 1, 1, ProtocolFConfigureMemSlots, false, (*Session).addMemReg},
		// REM_MEM_REG: "No file descriptors SHOULD be passed ... the
		// back-end MAY accept messages with one file descriptor ... MUST
		// close it" (QEMU 7.2 passes one).
		{ReqRemMemReg, "REM_MEM_REG", payloadMemReg, 0, 1, ProtocolFConfigureMemSlots, false, (*Session).remMemReg},
		{ReqSetStatus, "SET_STATUS", payloadU64, 0, 0, ProtocolFStatus, false, (*Session).setStatus},
		{ReqGetStatus, "GET_STATUS", payloadNone, 0, 0, ProtocolFStatus, true, (*Session).getStatus},
	} {
		table[e.req] = e
	}
}

// lookup returns the row of r, or nil for an unknown request.
func lookup(r Request) *entry {
	if uint64(r) >= uint64(len(table)) || table[r].handle == nil {
		return nil
	}
	return &table[r]
}
