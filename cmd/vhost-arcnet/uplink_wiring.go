package main

import (
	"log/slog"
	"net/netip"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/router"
	"github.com/arcnet/vhost-arcnet/nat"
)

// uplinkPort is an uplink (TAP, vmnet, XDP) as the router sees it: the
// port the router sends to, which hands its received frames to its peer.
type uplinkPort interface {
	datapath.Port
	SetPeer(datapath.Port)
}

// wireUplink is the part of the uplink set-up every kind of uplink shares:
// it creates the NAT engine and the router for up and connects the two
// ports. natCfg holds what is particular to the uplink (port range, shared
// address); its external address is link.ExternalAddr, and the guest
// subnet, gateway, flow limits and refusal come from cfg. link holds the
// uplink's link-level fields of the router's options (ExternalAddr,
// UplinkMAC, NextHop, NextHopMAC, ResolveNextHop, MTU, UplinkOffloads);
// the guest side (subnet, gateway, local port, NAT, neighbours, logger)
// is filled in here.
func (n *network) wireUplink(cfg *config, log *slog.Logger, up uplinkPort, natCfg nat.Config, link router.Options) error {
	natCfg.External = link.ExternalAddr
	natCfg.GuestPrefix = cfg.subnet
	natCfg.Router = n.gw.Addr()
	natCfg.MaxFlows = cfg.natMaxFlows
	natCfg.MaxFlowsPerGuest = cfg.natGuestMax
	natCfg.Refusal = nat.RefuseICMP
	var err error
	if n.eng, err = nat.New(natCfg); err != nil {
		return err
	}
	gw := n.gw
	opt := link
	opt.Subnet, opt.GatewayAddr, opt.GatewayMAC = cfg.subnet, gw.Addr(), header.MAC(gw.MAC())
	opt.Local, opt.NAT = n.hp, n.eng
	opt.Neighbour = func(a netip.Addr) (header.MAC, bool) {
		m, ok := gw.LookupIP(a)
		if !ok || len(m) != 6 {
			return header.MAC{}, false
		}
		return header.MAC(m), true
	}
	opt.NeighbourGen = gw.LeaseGeneration
	opt.Logger = log
	if n.rt, err = router.New(opt); err != nil {
		return err
	}
	n.rt.SetUplink(up)
	up.SetPeer(n.rt.UplinkPort())
	return nil
}

// openForwards starts the --forward relays and brings the router's
// forwarding table in line with them.
func (n *network) openForwards(cfg *config, log *slog.Logger) error {
	for _, spec := range cfg.forwards {
		f, err := n.newForwarder(spec, log)
		if err != nil {
			return err
		}
		n.fwds = append(n.fwds, f)
	}
	n.syncForwards()
	return nil
}
