//go:build !linux

package hostif

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// TAP is a Linux TAP device used as the uplink. On this system OpenTAP
// always fails; the type exists so that callers build everywhere.
type TAP struct {
	stats datapath.Stats
}

// OpenTAP fails with an error wrapping errors.ErrUnsupported: TAP uplinks
// are Linux only.
func OpenTAP(opt TAPOptions) (*TAP, error) {
	return nil, fmt.Errorf("the TAP uplink is Linux only: %w", errors.ErrUnsupported)
}

// Name returns the device's name.
func (t *TAP) Name() string { return "" }

// Stats returns the TAP's counters.
func (t *TAP) Stats() *datapath.Stats { return &t.stats }

// Send drops frames.
func (t *TAP) Send(frames []datapath.Frame) {}

// SetPeer does nothing.
func (t *TAP) SetPeer(p datapath.Port) {}

// Start does nothing.
func (t *TAP) Start() {}

// Close does nothing.
func (t *TAP) Close() error { return nil }

// HostAddr returns the zero address.
func (t *TAP) HostAddr() netip.Addr { return netip.Addr{} }

// NATAddr returns the zero address.
func (t *TAP) NATAddr() netip.Addr { return netip.Addr{} }

// Prefix returns the zero prefix.
func (t *TAP) Prefix() netip.Prefix { return netip.Prefix{} }

// HostMAC returns the zero MAC.
func (t *TAP) HostMAC() header.MAC { return header.MAC{} }

// MTU returns 0.
func (t *TAP) MTU() int { return 0 }

// Queues returns 0.
func (t *TAP) Queues() int { return 0 }

// Offloads returns no offloads.
func (t *TAP) Offloads() datapath.RxOffloads { return datapath.RxOffloads{} }

// SetInPlace does nothing.
func (t *TAP) SetInPlace(datapath.InPlaceTarget) {}

// InPlaceFrames returns 0.
func (t *TAP) InPlaceFrames() uint64 { return 0 }
