//go:build !linux

package vmnettest

import (
	"errors"
	"io"
	"net/netip"
)

// openTAP fails: the fake's TAP mode is Linux only.
func openTAP(name, ns string, addr netip.Prefix) (io.ReadWriteCloser, error) {
	return nil, errors.New("the fake's TAP mode is Linux only")
}
