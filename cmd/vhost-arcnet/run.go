package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// retainedPorts bounds how many ended guest ports keep their counters for
// the stats at exit (a frontend that reconnects forever must not grow the
// process).
const retainedPorts = 256

// ports is the registry of guest ports, for the stats records and the
// metrics.
type ports struct {
	mu    sync.Mutex
	next  int
	live  map[uint64]*guest
	ended []*guest
}

// guest is one attached guest port and its place on the switch (nil with a
// measurement uplink).
type guest struct {
	port   *datapath.GuestPort // nil for a frame-socket port
	frame  *datapath.FramePort // a frame-socket port (--listen-stream, --listen-dgram)
	kind   string              // "stream" or "dgram" for a frame-socket port
	sw     *datapath.SwitchPort
	uplink datapath.Port // the sink or loopback port of a measurement uplink
	info   vhostuser.SessionInfo
	rings  ringState // what the control API shows of its rings
}

// main returns the guest's port: the vhost-user or the frame-socket one.
func (g *guest) main() datapath.Port {
	if g.frame != nil {
		return g.frame
	}
	return g.port
}

// ports returns the guest port and its measurement uplink, if any.
func (g *guest) ports() []datapath.Port {
	if g.uplink != nil {
		return []datapath.Port{g.main(), g.uplink}
	}
	return []datapath.Port{g.main()}
}

func (r *ports) add(id uint64, g *guest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live[id] = g
}

func (r *ports) name() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := fmt.Sprintf("guest%d", r.next)
	r.next++
	return n
}

func (r *ports) end(id uint64) *guest {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.live[id]
	if g == nil {
		return nil
	}
	delete(r.live, id)
	r.ended = append(r.ended, g)
	if len(r.ended) > retainedPorts {
		r.ended = r.ended[1:]
	}
	return g
}

// snapshot returns the live guest ports and the ended ones still kept.
func (r *ports) snapshot() (live, ended []*guest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	live = make([]*guest, 0, len(r.live))
	for _, g := range r.live {
		live = append(live, g)
	}
	return live, append([]*guest(nil), r.ended...)
}

func (r *ports) all() []datapath.Port {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []datapath.Port
	for _, g := range r.ended {
		out = append(out, g.ports()...)
	}
	for _, g := range r.live {
		out = append(out, g.ports()...)
	}
	return out
}

// run serves the configured sockets until ctx ends. What it made (sockets,
// TAP, nftables table, forwards' listeners) is gone when it returns, and
// the lease file is written a last time; sockets inherited from the
// service manager (socket activation) are closed but stay.
func run(ctx context.Context, cfg *config, log *slog.Logger) error {
	act, err := socketActivation()
	if err != nil {
		return err
	}
	defer act.close()
	reg := &ports{live: map[uint64]*guest{}}
	var gnet *network
	if cfg.guestNetwork() {
		if gnet, err = newNetwork(cfg, log); err != nil {
			return err
		}
		defer gnet.close()
	}
	if len(cfg.streams)+len(cfg.dgrams) > 0 {
		fsocks, err := startFrameSockets(cfg, gnet, reg, log)
		if err != nil {
			return err
		}
		defer fsocks.close()
	}
	var source *datapath.Source
	if cfg.uplink == "source" {
		source = datapath.NewSource(cfg.sourceSize)
	}
	newDevice := func(info vhostuser.SessionInfo) (vhostuser.Device, error) {
		name := reg.name()
		opt := datapath.GuestPortOptions{
			Name: name, QueuePairs: cfg.queuePairs, Poll: cfg.poll, Logger: log,
		}
		switch cfg.uplink {
		case "source":
			opt.Source = source
		case "sink", "sink-copy", "loopback":
			// Measurement uplinks drop what finds the ring full, as the
			// backends they are compared with (DPDK's net_vhost) do.
		default:
			opt.Backlog = cfg.rxBacklog
		}
		p, err := datapath.NewGuestPort(opt)
		if err != nil {
			return nil, err
		}
		g := &guest{port: p, info: info}
		switch cfg.uplink {
		case "sink", "source":
			g.uplink = datapath.NewSink(name + "-sink")
			p.SetPeer(g.uplink)
		case "sink-copy":
			g.uplink = datapath.NewCopySink(name + "-sink")
			p.SetPeer(g.uplink)
		case "loopback":
			g.uplink = datapath.NewLoopback(name+"-loopback", p)
			p.SetPeer(g.uplink)
		default: // the guest network: none, tap, xdp, vmnet
			if g.sw, err = gnet.sw.Attach(p, datapath.PortOptions{AllowSpoofing: cfg.allowSpoofing}); err != nil {
				return nil, err
			}
		}
		g.rings.announce = func() {
			f := g.rings.features.Load()
			log.Info("guest port running", "port", name, "session", info.ID, "config_mac", net.HardwareAddr(info.MAC[:]).String(),
				"queue_pairs", g.rings.pairs(), "queue_pairs_offered", cfg.queuePairs,
				"features", fmt.Sprintf("%#x", f), "feature_names", strings.Join(featureList(f), ","))
		}
		reg.add(info.ID, g)
		// The MAC in the config space is what crosvm and cloud-hypervisor
		// show the guest; QEMU shows its own (-device ...,mac=). So the
		// switch learns the port's MAC from its first frame rather than
		// assuming this one.
		log.Info("guest port attached", "port", name, "session", info.ID, "role", info.Role.String(),
			"path", info.Path, "slot", info.Slot, "mac", net.HardwareAddr(info.MAC[:]).String())
		return g.device(), nil
	}
	features := vhostuser.DefaultFeatures
	if cfg.packed {
		features = vhostuser.PackedFeatures
	}
	srv, err := vhostuser.NewServer(vhostuser.Options{
		Features:    features,
		QueuePairs:  cfg.queuePairs,
		MTU:         uint16(cfg.mtu),
		MACs:        cfg.macs,
		LinkSpeed:   uint32(cfg.linkSpeed),
		SocketMode:  cfg.socketMode,
		SocketGroup: cfg.socketGroup,
		MaxMemory:   cfg.maxMemory,
		Logger:      log,
		NewDevice:   newDevice,
		OnSessionEnd: func(info vhostuser.SessionInfo, err error) {
			if g := reg.end(info.ID); g != nil {
				g.rings.end()
				mac := info.MAC // the config space's, unless the switch learnt the guest's
				if g.sw != nil {
					if m, ok := g.sw.MAC(); ok {
						mac = m
					}
					gnet.sw.Detach(g.sw)
				}
				log.Info("guest port detached", "port", g.port.Name(), "session", info.ID,
					"mac", net.HardwareAddr(mac[:]).String(), "err", err)
				for _, p := range g.ports() {
					datapath.LogStats(log, p)
				}
			}
		},
	})
	if err != nil {
		return err
	}
	if cfg.metricsAddr != "" {
		m, err := startMetrics(cfg.metricsAddr, &collector{ports: reg, net: gnet, srv: srv, natMaxFlows: cfg.natMaxFlows}, log)
		if err != nil {
			return err
		}
		defer m.close()
	}
	// Until Serve runs, the server's listeners are released here on an
	// error (Serve releases them itself).
	defer srv.Close()
	inherited := map[string]bool{}
	for _, path := range cfg.sockets {
		if l := act.take(path); l != nil {
			if err := srv.ListenOn(l, path); err != nil {
				l.Close()
				return fmt.Errorf("listen on %s: %w", path, err)
			}
			inherited[path] = true
			continue
		}
		if err := srv.Listen(path); err != nil {
			return fmt.Errorf("listen on %s: %w", path, err)
		}
	}
	if cfg.controlPath != "" {
		ln := act.take(cfg.controlPath, "control")
		c, err := startControl(cfg.controlPath, cfg.socketGID, &controlAPI{ports: reg, net: gnet, uplink: cfg.uplink,
			queuePairs: cfg.queuePairs, log: log, now: time.Now}, log, ln)
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			return err
		}
		defer c.close()
	}
	if err := act.unused(); err != nil {
		return err
	}
	for _, path := range cfg.connects {
		if err := srv.Connect(path); err != nil {
			return fmt.Errorf("connect to %s: %w", path, err)
		}
	}

	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	rl := &reloader{started: cfg.flags, applied: cfg, net: gnet, log: log}
	// The signals' goroutine ends before the network closes: no reload
	// into a closed network.
	var sigWG sync.WaitGroup
	sigStop := make(chan struct{})
	defer sigWG.Wait()
	defer close(sigStop)
	sigWG.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-sigStop:
				return
			case <-usr1:
				logAll(log, reg, srv)
				if gnet != nil {
					gnet.logStats(log)
				}
			case <-hup:
				if ctx.Err() == nil {
					rl.reload()
				}
			}
		}
	})

	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	for _, path := range cfg.sockets {
		log.Info("listening", "path", path, "uplink", cfg.uplink, "inherited", inherited[path])
	}
	for _, path := range cfg.connects {
		log.Info("connecting", "path", path, "uplink", cfg.uplink)
	}
	err = <-done
	logAll(log, reg, srv)
	if gnet != nil {
		gnet.logStats(log)
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func logAll(log *slog.Logger, reg *ports, srv *vhostuser.Server) {
	for _, p := range reg.all() {
		datapath.LogStats(log, p)
	}
	st := srv.Stats()
	log.Info("server stats", "sessions", st.Sessions, "active", st.Active, "messages", st.Messages,
		"errors", st.Errors, "disconnects", st.Disconnects, "refused", st.Refused, "dial_failures", st.DialFailures)
}
