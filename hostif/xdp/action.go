package xdp

import (
	"encoding/binary"
	"fmt"
)

// Action is an XDP program's verdict (enum xdp_action,
// include/uapi/linux/bpf.h).
type Action uint32

// The XDP actions.
const (
	ActionAborted  Action = 0 // XDP_ABORTED
	ActionDrop     Action = 1 // XDP_DROP
	ActionPass     Action = 2 // XDP_PASS
	ActionTX       Action = 3 // XDP_TX
	ActionRedirect Action = 4 // XDP_REDIRECT
)

// String returns the action's C name.
func (a Action) String() string {
	switch a {
	case ActionAborted:
		return "XDP_ABORTED"
	case ActionDrop:
		return "XDP_DROP"
	case ActionPass:
		return "XDP_PASS"
	case ActionTX:
		return "XDP_TX"
	case ActionRedirect:
		return "XDP_REDIRECT"
	}
	return fmt.Sprintf("Action(%d)", uint32(a))
}

// nativeU32 returns the 4 bytes b read as a native-endian uint32: what the
// program's 32-bit load of the same header bytes gives.
func nativeU32(b [4]byte) uint32 { return binary.NativeEndian.Uint32(b[:]) }

// Mode is how an XDP program is attached.
type Mode int

// The attach modes: the driver's own XDP hook, or the generic one after
// the kernel has built an skb (every driver; slower).
const (
	ModeNative Mode = iota + 1
	ModeGeneric
)

// String returns "native" or "generic".
func (m Mode) String() string {
	switch m {
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}
