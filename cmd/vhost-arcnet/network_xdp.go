package main

import (
	"fmt"
	"log/slog"

	"github.com/arcnet/vhost-arcnet/datapath/router"
	"github.com/arcnet/vhost-arcnet/hostif/xdp"
	"github.com/arcnet/vhost-arcnet/nat"
)

// openXDP opens the XDP uplink on cfg.xdpIface and sets up the NAT engine
// (the NIC's address, shared with the host: only --xdp-ports are the
// NAT's) and the router (the NIC's MAC, its default gateway as next hop,
// resolved by the kernel).
func (n *network) openXDP(cfg *config, log *slog.Logger) error {
	u, err := xdp.Open(xdp.Options{Interface: cfg.xdpIface, PortMin: cfg.xdpPorts.lo, PortMax: cfg.xdpPorts.hi, Logger: log})
	if err != nil {
		return err
	}
	n.xdp, n.natAddr, n.uplink = u, u.NATAddr(), u
	if cfg.subnet.Contains(u.NATAddr()) {
		return fmt.Errorf("the address %v of %s is inside --subnet %v: choose another subnet", u.NATAddr(), u.Name(), cfg.subnet)
	}
	hop, hopMAC := u.NextHop()
	err = n.wireUplink(cfg, log, u, nat.Config{
		PortMin: cfg.xdpPorts.lo, PortMax: cfg.xdpPorts.hi, SharedAddress: true,
	}, router.Options{
		ExternalAddr: u.NATAddr(), UplinkMAC: u.MAC(),
		NextHop: hop, NextHopMAC: hopMAC, ResolveNextHop: u.ResolveNextHop,
		MTU: u.MTU(), UplinkOffloads: u.Offloads(),
	})
	if err != nil {
		return err
	}
	log.Info("uplink", "kind", "xdp", "device", u.Name(), "nat_address", u.NATAddr(),
		"nat_ports", cfg.xdpPorts.String(), "next_hop", hop, "mtu", u.MTU(), "queues", u.Queues(),
		"mode", u.Mode().String(), "zero_copy", u.ZeroCopy())
	return nil
}

// logXDPStats logs the kernel's counters of the XDP uplink's sockets
// (drops before vhost-arcnet saw a frame: RX ring full, fill ring empty).
func (n *network) logXDPStats(log *slog.Logger) {
	st, err := n.xdp.SocketStats()
	if err != nil {
		log.Warn("xdp socket stats", "err", err)
		return
	}
	log.Info("xdp socket stats", "port", n.xdp.Name(), "rx_dropped", st.RxDropped, "rx_ring_full", st.RxRingFull,
		"fill_ring_empty", st.FillRingEmpty, "rx_invalid", st.RxInvalid, "tx_invalid", st.TxInvalid,
		"tx_ring_empty", st.TxRingEmpty)
}
