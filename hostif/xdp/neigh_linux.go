package xdp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// nextHopRecheck is how often the watcher reads the route and neighbour
// tables again, should a netlink notification have been lost (the socket
// buffer overflowed).
const nextHopRecheck = 10 * time.Second

// defaultGateway returns the IPv4 default route's gateway through ifindex
// in the main table.
func defaultGateway(nl *netlink.Handle, ifindex int) (netip.Addr, error) {
	routes, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: ifindex, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("reading the route table: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if a, ok := netip.AddrFromSlice(r.Gw.To4()); ok && r.Gw.To4() != nil {
			return a, nil
		}
	}
	return netip.Addr{}, errNoGateway
}

var errNoGateway = errors.New("no IPv4 default route with a gateway")

// neighbourMAC returns the kernel's neighbour entry for a on ifindex: its
// MAC when the entry has a usable one, and its NUD state.
func neighbourMAC(nl *netlink.Handle, ifindex int, a netip.Addr) (header.MAC, int, bool) {
	ns, err := nl.NeighList(ifindex, netlink.FAMILY_V4)
	if err != nil {
		return header.MAC{}, 0, false
	}
	for _, n := range ns {
		if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && ip == a {
			mac, ok := usableMAC(n)
			return mac, n.State, ok
		}
	}
	return header.MAC{}, 0, false
}

// usableMAC returns n's MAC if the kernel would send to it (NUD_VALID:
// reachable, stale, delay, probe, permanent, noarp).
func usableMAC(n netlink.Neigh) (header.MAC, bool) {
	const nudValid = netlink.NUD_PERMANENT | netlink.NUD_NOARP | netlink.NUD_REACHABLE |
		netlink.NUD_PROBE | netlink.NUD_STALE | netlink.NUD_DELAY
	if n.State&nudValid == 0 || len(n.HardwareAddr) != 6 {
		return header.MAC{}, false
	}
	m := header.MAC(n.HardwareAddr)
	if m == (header.MAC{}) || m.IsMulticast() {
		return header.MAC{}, false
	}
	return m, true
}

// resolve asks the kernel to resolve a on ifindex (RTM_NEWNEIGH with
// NTF_USE: neigh_event_send, as if the host had a packet for it): an
// incomplete entry sends an ARP request, a stale one goes to delay and
// then probe (a unicast ARP request) unless confirmed. The kernel's reply
// handling then updates the entry, and the watcher the router.
func resolve(nl *netlink.Handle, ifindex int, a netip.Addr) error {
	err := nl.NeighSet(&netlink.Neigh{LinkIndex: ifindex, Family: netlink.FAMILY_V4,
		State: netlink.NUD_NONE, Flags: netlink.NTF_USE, IP: net.IP(a.AsSlice())})
	if err != nil {
		return fmt.Errorf("asking the kernel to resolve %v: %w", a, err)
	}
	return nil
}

// nextHop follows the NIC's default gateway and its MAC in the kernel's
// tables and tells set each time either changes (mac zero: unknown).
type nextHop struct {
	ifindex int
	nl      *netlink.Handle // bound to the uplink's network namespace
	log     *slog.Logger
	set     func(netip.Addr, header.MAC)
	ask     chan struct{} // Resolve's requests, at most one pending
	done    chan struct{}
	stop    chan struct{} // ends the subscriptions
	routes  chan netlink.RouteUpdate
	neighs  chan netlink.NeighUpdate

	// The watcher goroutine's own.
	gw  netip.Addr
	mac header.MAC
}

// Resolve asks the watcher to have the kernel resolve the gateway. It
// never blocks (the router calls it from a datapath goroutine).
func (h *nextHop) Resolve() {
	select {
	case h.ask <- struct{}{}:
	default:
	}
}

// subscribe opens the route and neighbour notification sockets in the
// calling thread's network namespace (Open's).
func (h *nextHop) subscribe() {
	h.routes = make(chan netlink.RouteUpdate, 64)
	h.neighs = make(chan netlink.NeighUpdate, 256)
	h.stop = make(chan struct{})
	logErr := func(err error) {
		select {
		case <-h.stop:
			return // the sockets' own close
		default:
		}
		h.log.Warn("xdp uplink: netlink subscription failed: next hop changes are seen every 10 s only", "err", err)
	}
	if err := netlink.RouteSubscribeWithOptions(h.routes, h.stop, netlink.RouteSubscribeOptions{ErrorCallback: logErr}); err != nil {
		logErr(err)
		h.routes = nil
	}
	if err := netlink.NeighSubscribeWithOptions(h.neighs, h.stop, netlink.NeighSubscribeOptions{ErrorCallback: logErr}); err != nil {
		logErr(err)
		h.neighs = nil
	}
}

// run watches route and neighbour changes until done is closed.
func (h *nextHop) run() {
	defer close(h.stop)
	routes, neighs := h.routes, h.neighs
	tick := time.NewTicker(nextHopRecheck)
	defer tick.Stop()
	h.refresh()
	for {
		select {
		case <-h.done:
			return
		case <-h.ask:
			h.refresh()
		case <-tick.C:
			h.refresh()
		case u, ok := <-routes:
			if !ok {
				routes = nil
				continue
			}
			if u.LinkIndex == h.ifindex {
				h.refresh()
			}
		case u, ok := <-neighs:
			if !ok {
				neighs = nil
				continue
			}
			if ip, _ := netip.AddrFromSlice(u.IP.To4()); u.LinkIndex == h.ifindex && u.IP.To4() != nil && ip == h.gw {
				h.neighbour(u)
			}
		}
	}
}

// refresh reads the default gateway and its neighbour entry again.
func (h *nextHop) refresh() {
	gw, err := defaultGateway(h.nl, h.ifindex)
	if err != nil {
		if h.gw.IsValid() {
			h.log.Warn("xdp uplink: the default route is gone: guest traffic waits for one", "err", err)
			h.gw, h.mac = netip.Addr{}, header.MAC{}
		}
		return
	}
	if gw != h.gw {
		h.log.Info("xdp uplink: next hop", "gateway", gw)
		h.gw, h.mac = gw, header.MAC{}
		h.set(gw, header.MAC{})
	}
	mac, state, ok := neighbourMAC(h.nl, h.ifindex, gw)
	h.update(mac, ok)
	if !ok || state&netlink.NUD_STALE != 0 {
		if err := resolve(h.nl, h.ifindex, gw); err != nil {
			h.log.Warn("xdp uplink: resolving the next hop", "err", err)
		}
	}
}

// neighbour handles a change of the gateway's neighbour entry.
func (h *nextHop) neighbour(u netlink.NeighUpdate) {
	if u.Type == unix.RTM_DELNEIGH {
		h.update(header.MAC{}, false)
		h.resolveLogged()
		return
	}
	mac, ok := usableMAC(u.Neigh)
	h.update(mac, ok)
	// A stale entry is re-resolved: traffic through AF_XDP never confirms
	// it to the kernel, so without this it stays stale until the garbage
	// collector takes it.
	if !ok || u.State&netlink.NUD_STALE != 0 {
		h.resolveLogged()
	}
}

func (h *nextHop) resolveLogged() {
	if err := resolve(h.nl, h.ifindex, h.gw); err != nil {
		h.log.Warn("xdp uplink: resolving the next hop", "err", err)
	}
}

// update tells set about a new MAC (or that none is usable now: the last
// one is kept while the kernel resolves, as the kernel keeps sending to a
// stale entry's MAC).
func (h *nextHop) update(mac header.MAC, ok bool) {
	if !ok || mac == h.mac {
		return
	}
	h.mac = mac
	h.log.Info("xdp uplink: next hop resolved", "gateway", h.gw, "mac", mac.String())
	h.set(h.gw, mac)
}
