package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// portRange is --xdp-ports LO-HI: the NAT's ports on the XDP uplink's
// shared address.
type portRange struct{ lo, hi uint16 }

func (r portRange) String() string { return fmt.Sprintf("%d-%d", r.lo, r.hi) }

func parsePortRange(s string) (portRange, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(lo, 10, 16)
	b, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || a < 1024 || a > b {
		return portRange{}, errors.New("want LO-HI with 1024 <= LO <= HI <= 65535, such as 61000-65535")
	}
	return portRange{uint16(a), uint16(b)}, nil
}
