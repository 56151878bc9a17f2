package xdp

import "log/slog"

// Default NAT port range of the XDP uplink: above Linux's default
// ephemeral range (net.ipv4.ip_local_port_range 32768-60999), so that the
// host's own sockets rarely wanted these ports before they were reserved.
const (
	DefaultPortMin = 61000
	DefaultPortMax = 65535
)

// Options configures Open.
type Options struct {
	// Interface is the host NIC's name.
	Interface string
	// PortMin and PortMax are the NAT's port range (inclusive): reserved
	// on the host while the uplink is open. Default 61000-65535.
	PortMin, PortMax uint16
	// Logger receives the uplink's records; nil means slog.Default.
	Logger *slog.Logger
}
