package vhostuser

import "errors"

// Sentinel errors. A session that fails returns (and passes to
// Options.OnSessionEnd) an error wrapping one of them; test with errors.Is.
// Each means the frontend broke the protocol or sent bad input: that
// session ends, the rest of the process carries on. Host failures (a
// socket that cannot be made, say) are returned by Listen and Serve as
// wrapped errnos instead.
var (
	// ErrBadHeader: a message header with a wrong version, the reply flag,
	// unknown flags, or a truncated header.
	ErrBadHeader = errors.New("bad message header")
	// ErrBadSize: a payload whose size is not the one the request needs.
	ErrBadSize = errors.New("bad payload size")
	// ErrBadFDs: too many or too few file descriptors for the request, or an
	// fd of the wrong kind.
	ErrBadFDs = errors.New("bad file descriptors")
	// ErrUnknownRequest: a request code this backend does not implement.
	ErrUnknownRequest = errors.New("unknown request")
	// ErrNotNegotiated: a request (or feature bit) that needs a feature the
	// frontend did not negotiate or the backend did not offer.
	ErrNotNegotiated = errors.New("feature not negotiated")
	// ErrInvalid: a well-formed request with a value the spec or this
	// backend does not accept (queue index out of range, ring size not a
	// power of two, request out of order, ...).
	ErrInvalid = errors.New("invalid request")
	// ErrBadMemory: a memory table or log area that cannot be used
	// (overlapping or empty regions, overflowing offsets, unmappable fds).
	ErrBadMemory = errors.New("bad memory region")
	// ErrMemoryLimit: a SET_MEM_TABLE or ADD_MEM_REG that would take the
	// guest memory of all sessions above Options.MaxMemory. Unlike the
	// others it does not end the session: the request is refused (a
	// non-zero ack with REPLY_ACK) and the memory stays as it was.
	ErrMemoryLimit = errors.New("server guest memory limit reached")
	// ErrBadRing: ring addresses that are not inside guest memory or break
	// the virtqueue layout rules.
	ErrBadRing = errors.New("bad vring")
)
