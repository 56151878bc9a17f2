//go:build !linux

package xdp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// Uplink is the XDP uplink on a host NIC. On this system Open always
// fails; the type exists so that callers build everywhere.
type Uplink struct{ stats datapath.Stats }

// Open fails with an error wrapping errors.ErrUnsupported: XDP and AF_XDP
// are Linux only.
func Open(opt Options) (*Uplink, error) {
	return nil, fmt.Errorf("the xdp uplink is not supported on this OS (XDP and AF_XDP are Linux only): %w", errors.ErrUnsupported)
}

// Name returns "".
func (u *Uplink) Name() string { return "" }

// Stats returns the uplink's counters.
func (u *Uplink) Stats() *datapath.Stats { return &u.stats }

// NATAddr returns the zero address.
func (u *Uplink) NATAddr() netip.Addr { return netip.Addr{} }

// MAC returns the zero MAC.
func (u *Uplink) MAC() header.MAC { return header.MAC{} }

// MTU returns 0.
func (u *Uplink) MTU() int { return 0 }

// Mode returns 0.
func (u *Uplink) Mode() Mode { return 0 }

// Queues returns 0.
func (u *Uplink) Queues() int { return 0 }

// ZeroCopy reports false.
func (u *Uplink) ZeroCopy() bool { return false }

// NextHop returns zero values.
func (u *Uplink) NextHop() (netip.Addr, header.MAC) { return netip.Addr{}, header.MAC{} }

// Offloads returns none.
func (u *Uplink) Offloads() datapath.RxOffloads { return datapath.RxOffloads{} }

// SetPeer does nothing.
func (u *Uplink) SetPeer(p datapath.Port) {}

// ResolveNextHop does nothing.
func (u *Uplink) ResolveNextHop() {}

// Start does nothing.
func (u *Uplink) Start(setNextHop func(netip.Addr, header.MAC)) {}

// Send drops frames.
func (u *Uplink) Send(frames []datapath.Frame) {}

// Close does nothing.
func (u *Uplink) Close() error { return nil }

// SocketStats are the kernel's counters of the uplink's AF_XDP sockets.
type SocketStats struct {
	RxDropped, RxInvalid, TxInvalid, RxRingFull, FillRingEmpty, TxRingEmpty uint64
}

// SocketStats fails: there are no sockets on this system.
func (u *Uplink) SocketStats() (SocketStats, error) {
	return SocketStats{}, fmt.Errorf("the xdp uplink is not supported on this OS: %w", errors.ErrUnsupported)
}
