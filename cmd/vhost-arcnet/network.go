package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/router"
	"github.com/arcnet/vhost-arcnet/hostif"
	"github.com/arcnet/vhost-arcnet/hostif/xdp"
	"github.com/arcnet/vhost-arcnet/nat"
	"github.com/arcnet/vhost-arcnet/services"
)

// network is the guest network: the switch every guest port is attached
// to, the gateway's services on it and, with an uplink (--uplink tap), the
// router, the NAT engine, the uplink and the port forwards.
type network struct {
	sw *datapath.Switch
	gw *services.Gateway
	hp *datapath.HandlerPort

	// With an uplink.
	rt      *router.Router
	eng     *nat.Engine
	tap     *hostif.TAP
	xdp     *xdp.Uplink   // --uplink xdp:IFACE
	vmnet   *hostif.VMNet // --uplink vmnet[:MODE]
	uplink  datapath.Port // the TAP or the XDP uplink
	natAddr netip.Addr    // where forwards relay to: the NAT address
	masq    *hostif.Masquerade
	ctx     context.Context // ends at close: the forwards' Serve
	stop    context.CancelFunc
	wg      sync.WaitGroup
	log     *slog.Logger

	// fwdMu guards fwds, fwdAdded and fwdClosed, and serialises forward
	// (re)programming in the NAT engine: a forward removed at run time
	// (control.go) is never programmed again.
	fwdMu     sync.Mutex
	fwds      []*hostif.Forwarder
	fwdAdded  map[hostif.ForwardSpec]bool // added at run time, not by --forward
	fwdClosed bool

	flows   *flowSaver           // --nat-state-file (natstate.go)
	pcap    *datapath.PcapWriter // --pcap
	pcapErr bool                 // its failure was logged (tick's goroutine only)
}

// leases lets the switch's anti-spoofing ask the gateway's DHCP server which
// address a MAC holds.
type leases struct{ gw *services.Gateway }

func (l leases) LeasedIP(mac header.MAC) (netip.Addr, bool) { return l.gw.LookupMAC(mac[:]) }
func (l leases) LeaseGeneration() uint64                    { return l.gw.LeaseGeneration() }

func newNetwork(cfg *config, log *slog.Logger) (_ *network, err error) {
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
	// n is not the named result: "return nil, err" must not clear it
	// before the deferred close releases what was opened.
	n := &network{gw: gw, log: log}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	for _, r := range cfg.dnsRecords {
		if _, err := gw.AddRecord(r.name, r.addr); err != nil {
			return nil, fmt.Errorf("--dns-record %s: %w", r, err)
		}
	}
	if n.sw, err = datapath.NewSwitch(datapath.SwitchOptions{Leases: leases{gw}, Logger: log}); err != nil {
		return nil, err
	}
	if cfg.pcapFile != "" {
		f, err := os.OpenFile(cfg.pcapFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("--pcap: %w", err)
		}
		if n.pcap, err = datapath.NewPcapWriter(f, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("--pcap: %w", err)
		}
		n.sw.SetCapture(n.pcap)
		log.Info("capturing every forwarded frame", "pcap", cfg.pcapFile)
	}
	n.hp = datapath.NewHandlerPort("gateway", gw)
	var gwPort datapath.Port = n.hp
	if cfg.routed() {
		if err := n.openUplink(cfg, log); err != nil {
			return nil, err
		}
		gwPort = n.rt.SwitchPort()
	}
	gwSP, err := n.sw.Attach(gwPort, datapath.PortOptions{MAC: header.MAC(gw.MAC()), AllowSpoofing: true})
	if err != nil {
		return nil, err
	}
	if n.tap != nil {
		// Large frames from the TAP go straight into the one guest's
		// receive buffers (datapath/inplace.go).
		n.tap.SetInPlace(n.sw.InPlaceTarget(gwSP))
	}
	log.Info("guest network", "subnet", gw.Subnet(), "gateway", gw.Addr(), "domain", cfg.domain,
		"gateway_mac", gw.MAC().String())
	ctx, stop := context.WithCancel(context.Background())
	n.ctx, n.stop = ctx, stop
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.tick(ctx) }()
	n.startFlowSaver(cfg.natStateFile)
	if n.xdp != nil {
		n.xdp.Start(func(a netip.Addr, m header.MAC) {
			if err := n.rt.SetNextHop(a, m); err != nil {
				log.Warn("xdp uplink: next hop refused", "err", err)
			}
		})
	}
	if n.vmnet != nil {
		n.vmnet.Start()
	}
	if n.tap != nil {
		n.tap.Start()
	}
	for _, f := range n.fwds { // --forward: tap and vmnet only
		n.serveForward(f)
	}
	return n, nil
}

// serveForward relays f until close (or its own Close).
func (n *network) serveForward(f *hostif.Forwarder) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := f.Serve(n.ctx); err != nil && n.ctx.Err() == nil {
			n.log.Error("port forward stopped", "listen", f.Addr().String(), "err", err)
		}
	}()
}

// forwarders returns the port forwards now.
func (n *network) forwarders() []*hostif.Forwarder {
	n.fwdMu.Lock()
	defer n.fwdMu.Unlock()
	return slices.Clone(n.fwds)
}

// openUplink opens the TAP and sets up the NAT engine, the router, the
// masquerade and the forwards (ARCHITECTURE.md "A frame's path").
func (n *network) openUplink(cfg *config, log *slog.Logger) error {
	switch cfg.uplink {
	case "xdp":
		return n.openXDP(cfg, log)
	case "vmnet":
		return n.openVMNet(cfg, log)
	}
	tap, err := hostif.OpenTAP(hostif.TAPOptions{
		Name: cfg.tapName, Existing: cfg.tapName != "", Queues: cfg.queuePairs,
		LinkNet: cfg.uplinkNet, MTU: cfg.mtu, Logger: log,
	})
	if err != nil {
		return err
	}
	n.tap, n.natAddr, n.uplink = tap, tap.NATAddr(), tap
	if tap.Prefix().Overlaps(cfg.subnet) {
		return fmt.Errorf("the link network %v of %s overlaps --subnet %v: choose another subnet", tap.Prefix(), tap.Name(), cfg.subnet)
	}
	err = n.wireUplink(cfg, log, tap, nat.Config{}, router.Options{
		ExternalAddr: tap.NATAddr(), UplinkMAC: uplinkMAC(header.MAC(n.gw.MAC())),
		NextHop: tap.HostAddr(), NextHopMAC: tap.HostMAC(), MTU: tap.MTU(),
		UplinkOffloads: tap.Offloads(),
	})
	if err != nil {
		return err
	}
	if err := n.gw.SetHostAddr(tap.HostAddr()); err != nil {
		return err
	}
	if cfg.masquerade {
		if n.masq, err = hostif.SetupMasquerade(hostif.MasqueradeOptions{Source: tap.Prefix(), Logger: log}); err != nil {
			return err
		}
	}
	if err := n.openForwards(cfg, log); err != nil {
		return err
	}
	log.Info("uplink", "kind", "tap", "device", tap.Name(), "link", tap.Prefix(), "host", tap.HostAddr(),
		"nat_address", tap.NATAddr(), "mtu", tap.MTU(), "queues", tap.Queues(), "masquerade", cfg.masquerade,
		"host_name", "host."+cfg.domain)
	return nil
}

// uplinkMAC is the router's MAC on the uplink link: the gateway's with the
// last octet flipped, still locally administered unicast.
func uplinkMAC(gw header.MAC) header.MAC {
	m := gw
	m[0] = (m[0] | 0x02) &^ 0x01
	m[5] ^= 0xff
	return m
}

// newForwarder binds a port forward: connections to HOSTADDR:HOSTPORT are
// relayed to the NAT address on HOSTPORT, which the NAT engine forwards to
// the guest. The engine's forward is programmed at start, once a second
// (syncForwards: a guest named by host name may get or change its lease
// at any time, and other guests reach the forward at the NAT address
// without a host client ever using it) and at each new connection.
func (n *network) newForwarder(spec hostif.ForwardSpec, log *slog.Logger) (*hostif.Forwarder, error) {
	prepare := func(context.Context) error { return n.programForward(spec) }
	return hostif.NewForwarder(spec, hostif.ForwarderOptions{
		Target:  netip.AddrPortFrom(n.natAddr, spec.HostPort),
		Prepare: prepare,
		Logger:  log,
	})
}

// programForward resolves spec's guest (address or DHCP host name) and
// makes the NAT engine forward the external port HOSTPORT to it.
func (n *network) programForward(spec hostif.ForwardSpec) error {
	proto := nat.TCP
	if spec.Proto == "udp" {
		proto = nat.UDP
	}
	a, err := n.resolveGuest(spec.Guest)
	if err != nil {
		return err
	}
	n.fwdMu.Lock()
	defer n.fwdMu.Unlock()
	if !slices.ContainsFunc(n.fwds, func(f *hostif.Forwarder) bool { return f.Spec() == spec }) {
		return fmt.Errorf("forward %s was removed", spec)
	}
	want := nat.Forward{Proto: proto, Port: spec.HostPort, Guest: netip.AddrPortFrom(a, spec.GuestPort)}
	for _, f := range n.eng.Forwards() {
		if f == want {
			return nil
		}
	}
	return n.eng.AddForward(want)
}

// syncForwards programs every forward whose guest can be resolved now; a
// guest without a lease yet is tried again at the next tick.
func (n *network) syncForwards() {
	for _, f := range n.forwarders() {
		_ = n.programForward(f.Spec())
	}
}

// resolveGuest turns a forward's GUEST into an address: an IPv4 literal, or
// the host name (with or without the guests' domain) of a current lease.
func (n *network) resolveGuest(guest string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(guest); err == nil {
		if !n.gw.Subnet().Contains(a) {
			return netip.Addr{}, fmt.Errorf("guest %v is outside the guest subnet %v", a, n.gw.Subnet())
		}
		return a, nil
	}
	name := strings.TrimSuffix(strings.ToLower(guest), ".")
	if d := "." + strings.ToLower(n.gw.Domain()); strings.HasSuffix(name, d) {
		name = strings.TrimSuffix(name, d)
	}
	now := time.Now()
	for _, l := range n.gw.Leases() {
		if l.State == services.LeaseBound && strings.EqualFold(l.Hostname, name) && l.Expires.After(now) {
			return l.Addr, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no guest named %q holds a lease", guest)
}

// tick runs the network's housekeeping once a second: expired NAT flows are
// reclaimed (so memory held by dead flows stays bounded when traffic is
// low) and the capture file is flushed.
func (n *network) tick(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n.eng != nil {
				n.eng.Expire()
				n.syncForwards()
			}
			if n.pcap != nil {
				if err := n.pcap.Flush(); err != nil && !n.pcapErr {
					n.pcapErr = true
					slog.Default().Error("--pcap: writing the capture failed; capture stopped", "err", err)
				}
			}
		}
	}
}

func (n *network) logStats(log *slog.Logger) {
	datapath.LogStats(log, n.hp)
	attrs := append([]slog.Attr{slog.String("port", "gateway")}, n.gw.Stats().LogAttrs()...)
	if n.rt != nil {
		datapath.LogStats(log, n.uplink)
		if n.xdp != nil {
			n.logXDPStats(log)
		}
		attrs = append(attrs, n.rt.Stats().LogAttrs()...)
		if n.tap != nil {
			attrs = append(attrs, slog.Uint64("tap_in_place", n.tap.InPlaceFrames()))
		}
		st := n.eng.Stats()
		attrs = append(attrs,
			slog.Int("nat_flows", n.eng.Len()),
			slog.Uint64("nat_flows_tcp", st.FlowsTCP), slog.Uint64("nat_flows_udp", st.FlowsUDP),
			slog.Uint64("nat_flows_icmp", st.FlowsICMP), slog.Uint64("nat_created", st.Created),
			slog.Uint64("nat_expired", st.Expired), slog.Uint64("nat_icmp_errors", st.ICMPErrors),
			slog.Uint64("nat_refusal_replies", st.RefusalReplies))
		for _, f := range n.forwarders() {
			fs := f.Stats()
			log.Info("forward stats", "listen", f.Addr().String(), "accepted", fs.Accepted, "active", fs.Active,
				"failed_prepare", fs.FailedPrepare, "failed_dial", fs.FailedDial,
				"bytes_to_guest", fs.ToGuestBytes, "bytes_from_guest", fs.FromGuestBytes)
		}
	}
	log.LogAttrs(context.Background(), slog.LevelInfo, "gateway stats", attrs...)
}

// close releases everything the network holds: forwards first (no new
// connections), then the uplink (its readers stop), the masquerade table,
// and the gateway (the lease file's last write).
func (n *network) close() {
	log := slog.Default()
	if n.stop != nil {
		n.stop()
	}
	var errs []error
	n.fwdMu.Lock()
	n.fwdClosed = true
	fwds := n.fwds
	n.fwdMu.Unlock()
	for _, f := range fwds {
		errs = append(errs, f.Close())
	}
	n.wg.Wait()
	if n.tap != nil {
		errs = append(errs, n.tap.Close())
	}
	if n.xdp != nil {
		errs = append(errs, n.xdp.Close())
	}
	if n.vmnet != nil {
		errs = append(errs, n.vmnet.Close())
	}
	if n.flows != nil {
		n.flows.save(true) // the uplink is closed: the flows are final
	}
	if n.masq != nil {
		errs = append(errs, n.masq.Close())
	}
	if n.pcap != nil {
		if n.sw != nil {
			n.sw.SetCapture(nil)
		}
		p := n.pcap
		errs = append(errs, p.Close())
		slog.Default().Info("capture closed", "frames", p.Frames.Load(), "bytes", p.Bytes.Load(),
			"truncated", p.Truncated.Load())
	}
	errs = append(errs, n.gw.Close())
	if err := errors.Join(errs...); err != nil {
		log.Warn("guest network close", "err", err)
	}
}
