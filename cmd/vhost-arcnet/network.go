package main

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/services"
)

// network is the guest network of --uplink none: the switch every guest
// port is attached to, and the gateway's services on it.
type network struct {
	sw *datapath.Switch
	gw *services.Gateway
	hp *datapath.HandlerPort
}

// leases lets the switch's anti-spoofing ask the gateway's DHCP server which
// address a MAC holds.
type leases struct{ gw *services.Gateway }

func (l leases) LeasedIP(mac header.MAC) (netip.Addr, bool) { return l.gw.LookupMAC(mac[:]) }
func (l leases) LeaseGeneration() uint64                    { return l.gw.LeaseGeneration() }

func newNetwork(cfg *config, log *slog.Logger) (*network, error) {
	gw, err := services.NewGateway(services.Config{
		Subnet:       cfg.subnet,
		Domain:       cfg.domain,
		MTU:          max(cfg.mtu, 576),
		LeaseTime:    cfg.leaseTime,
		LeaseFile:    cfg.leaseFile,
		Reservations: cfg.reservations,
		DNSUpstreams: cfg.dnsUpstreams,
		Logger:       log,
	})
	if err != nil {
		return nil, err
	}
	sw, err := datapath.NewSwitch(datapath.SwitchOptions{Leases: leases{gw}, Logger: log})
	if err != nil {
		gw.Close()
		return nil, err
	}
	hp := datapath.NewHandlerPort("gateway", gw)
	if _, err := sw.Attach(hp, datapath.PortOptions{MAC: header.MAC(gw.MAC()), AllowSpoofing: true}); err != nil {
		gw.Close()
		return nil, err
	}
	log.Info("guest network", "subnet", gw.Subnet(), "gateway", gw.Addr(), "domain", cfg.domain,
		"gateway_mac", gw.MAC().String())
	return &network{sw: sw, gw: gw, hp: hp}, nil
}

func (n *network) logStats(log *slog.Logger) {
	datapath.LogStats(log, n.hp)
	attrs := append([]slog.Attr{slog.String("port", "gateway")}, n.gw.Stats().LogAttrs()...)
	log.LogAttrs(context.Background(), slog.LevelInfo, "gateway stats", attrs...)
}

func (n *network) close() {
	if err := n.gw.Close(); err != nil {
		slog.Default().Warn("gateway close", "err", err)
	}
}
