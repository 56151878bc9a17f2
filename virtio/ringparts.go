package virtio

import (
	"fmt"

	"github.com/arcnet/vhost-arcnet/virtio/internal/ring"
)

// ringPart is one part of a virtqueue in guest memory (split: descriptor
// table, available and used rings; packed: descriptor ring and the two
// event suppression structures) with the alignment the spec asks of it.
type ringPart struct {
	name  string
	gpa   uint64
	len   uint64
	align uint64
}

// mapRingParts maps the three parts of a queue when it is set up (not per
// packet). A part whose guest address is not aligned as the spec asks, or
// that is outside guest memory, is ErrBadRing or mem's error. The index
// helpers need the natural alignment of the host address too (LDARH faults
// otherwise); a mapping is page aligned, so this only fails for odd test
// memory.
func mapRingParts(mem *Memory, parts [3]ringPart) ([3][]byte, error) {
	var b [3][]byte
	for i, p := range parts {
		if p.gpa&(p.align-1) != 0 {
			return b, fmt.Errorf("%s at %#x: not %d-byte aligned: %w", p.name, p.gpa, p.align, ErrBadRing)
		}
		s, err := mem.Slice(p.gpa, p.len)
		if err != nil {
			return b, fmt.Errorf("%s: %w", p.name, err)
		}
		if !ring.Aligned(s, uintptr(p.align)) {
			return b, fmt.Errorf("%s at %#x: host address not %d-byte aligned: %w", p.name, p.gpa, p.align, ErrBadRing)
		}
		b[i] = s
	}
	return b, nil
}
