package main

import (
	"fmt"
	"log/slog"

	"github.com/arcnet/vhost-arcnet/datapath/router"
	"github.com/arcnet/vhost-arcnet/hostif"
	"github.com/arcnet/vhost-arcnet/nat"
)

// openVMNet starts vmnet-helper for --uplink vmnet[:MODE], takes its DHCP
// lease and sets up the NAT engine (the leased address), the router (the
// lease's router as next hop, its MAC found by ARP at start) and the
// forwards (relayed to the leased address, which the Mac reaches on
// vmnet's bridge). In shared and host mode the lease's router is the Mac
// itself, served as host.<domain>; in bridged mode it is the LAN's router
// and host.<domain> does not exist.
func (n *network) openVMNet(cfg *config, log *slog.Logger) error {
	v, err := hostif.OpenVMNet(hostif.VMNetOptions{
		Helper: cfg.vmnetHelper, Mode: cfg.vmnetMode, Interface: cfg.vmnetIface,
		Hostname: "vhost-arcnet", Logger: log,
	})
	if err != nil {
		return err
	}
	l := v.Lease()
	n.vmnet, n.natAddr, n.uplink = v, l.Addr, v
	if cfg.subnet.Overlaps(l.Prefix.Masked()) {
		return fmt.Errorf("vmnet's network %v overlaps --subnet %v: choose another subnet", l.Prefix.Masked(), cfg.subnet)
	}
	err = n.wireUplink(cfg, log, v, nat.Config{}, router.Options{
		ExternalAddr: l.Addr, UplinkMAC: v.MAC(),
		NextHop: l.Router, NextHopMAC: v.RouterMAC(), MTU: v.MTU(),
		UplinkOffloads: v.Offloads(),
	})
	if err != nil {
		return err
	}
	hostName := ""
	if cfg.vmnetMode != hostif.VMNetBridged {
		if err := n.gw.SetHostAddr(l.Router); err != nil {
			return err
		}
		hostName = "host." + cfg.domain
	}
	if err := n.openForwards(cfg, log); err != nil {
		return err
	}
	log.Info("uplink", "kind", "vmnet", "mode", cfg.vmnetMode, "interface", cfg.vmnetIface,
		"nat_address", l.Addr, "network", l.Prefix.Masked().String(), "router", l.Router, "mac", v.MAC().String(),
		"mtu", v.MTU(), "lease", l.Duration.String(), "host_name", hostName)
	return nil
}
