package xdp

import (
	"fmt"
	"strconv"
	"strings"
)

// portSet is a set of TCP/UDP ports, as net.ipv4.ip_local_reserved_ports
// lists them (Documentation/networking/ip-sysctl.rst: "comma separated list
// of ranges", e.g. "8080,9148-9149").
type portSet [65536 / 64]uint64

// parsePortSet parses a reserved-ports list; empty is the empty set.
func parsePortSet(s string) (*portSet, error) {
	var p portSet
	s = strings.TrimSpace(s)
	if s == "" {
		return &p, nil
	}
	for _, item := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(item), "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("reserved ports %q: %q: not a port", s, item)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 16); err != nil || b < a {
				return nil, fmt.Errorf("reserved ports %q: %q: not a range", s, item)
			}
		}
		p.add(uint16(a), uint16(b))
	}
	return &p, nil
}

func (p *portSet) add(lo, hi uint16) {
	for x := uint32(lo); x <= uint32(hi); x++ {
		p[x/64] |= 1 << (x % 64)
	}
}

func (p *portSet) has(x uint16) bool { return p[x/64]&(1<<(x%64)) != 0 }

func (p *portSet) remove(x uint16) { p[x/64] &^= 1 << (x % 64) }

// String formats the set as the kernel does: ascending ranges, a single
// port alone.
func (p *portSet) String() string {
	var b strings.Builder
	for x := uint32(0); x < 65536; x++ {
		if !p.has(uint16(x)) {
			continue
		}
		y := x
		for y+1 < 65536 && p.has(uint16(y+1)) {
			y++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if x == y {
			fmt.Fprintf(&b, "%d", x)
		} else {
			fmt.Fprintf(&b, "%d-%d", x, y)
		}
		x = y
	}
	return b.String()
}
