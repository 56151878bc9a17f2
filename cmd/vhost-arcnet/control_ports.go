package main

import (
	"fmt"
	"math/bits"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/services"
	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// ringState is what the control API shows of a guest port's rings: the
// features its rings were started with and which rings run. The session
// writes it (StartQueue, StopQueue: once per ring start, not per packet);
// the API reads it.
type ringState struct {
	features atomic.Uint64
	running  atomic.Uint32 // bit i: queue i runs (2k receiveq k, 2k+1 transmitq k)

	// announce logs the port's features and queue pairs once its rings
	// have settled: announceDelay after the last ring start of a burst
	// (a driver starts its rings one after another). nil: no log.
	announce func()
	mu       sync.Mutex
	timer    *time.Timer
	ended    bool
}

// announceDelay is how long after a ring start the "guest port running"
// line waits for the driver's other rings.
const announceDelay = 200 * time.Millisecond

// started notes a ring start for the announcement.
func (r *ringState) started() {
	if r.announce == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return
	}
	if r.timer == nil {
		r.timer = time.AfterFunc(announceDelay, func() {
			r.mu.Lock()
			ended := r.ended
			r.mu.Unlock()
			if !ended {
				r.announce()
			}
		})
		return
	}
	r.timer.Reset(announceDelay)
}

// end stops the announcement of a port whose session ended.
func (r *ringState) end() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = true
	if r.timer != nil {
		r.timer.Stop()
	}
}

// trackedPort is the vhostuser.Device of a guest port: the GuestPort, with
// its ring starts and stops noted in ringState. Every other method (and
// optional interface) is the GuestPort's.
type trackedPort struct {
	*datapath.GuestPort
	rings *ringState
}

func (g *guest) device() vhostuser.Device { return trackedPort{g.port, &g.rings} }

func (t trackedPort) StartQueue(idx int, q *virtio.Queue, kick virtio.Doorbell, call virtio.Notifier) {
	if q != nil && idx >= 0 && idx < 32 {
		t.rings.features.Store(q.Features())
		t.rings.running.Or(1 << idx)
	}
	t.GuestPort.StartQueue(idx, q, kick, call)
	t.rings.started()
}

func (t trackedPort) StopQueue(idx int) {
	t.GuestPort.StopQueue(idx)
	if idx >= 0 && idx < 32 {
		t.rings.running.And(^uint32(1 << idx))
	}
}

// pairs returns the number of queue pairs with a running ring.
func (r *ringState) pairs() int {
	m := r.running.Load()
	n := 0
	for m != 0 {
		if m&3 != 0 {
			n++
		}
		m >>= 2
	}
	return n
}

// featureNames are the virtio feature bits by name (virtio 1.2 §5.1.3,
// §6; vhost-user's LOG_ALL and PROTOCOL_FEATURES).
var featureNames = map[uint64]string{
	virtio.NetFCsum: "CSUM", virtio.NetFGuestCsum: "GUEST_CSUM", virtio.NetFCtrlGuestOffloads: "CTRL_GUEST_OFFLOADS",
	virtio.NetFMTU: "MTU", virtio.NetFMAC: "MAC", virtio.NetFGuestTSO4: "GUEST_TSO4", virtio.NetFGuestTSO6: "GUEST_TSO6",
	virtio.NetFGuestECN: "GUEST_ECN", virtio.NetFGuestUFO: "GUEST_UFO", virtio.NetFHostTSO4: "HOST_TSO4",
	virtio.NetFHostTSO6: "HOST_TSO6", virtio.NetFHostECN: "HOST_ECN", virtio.NetFHostUFO: "HOST_UFO",
	virtio.NetFMrgRxbuf: "MRG_RXBUF", virtio.NetFStatus: "STATUS", virtio.NetFCtrlVQ: "CTRL_VQ",
	virtio.NetFCtrlRx: "CTRL_RX", virtio.NetFCtrlVLAN: "CTRL_VLAN", virtio.NetFGuestAnnounce: "GUEST_ANNOUNCE",
	virtio.NetFMQ: "MQ", virtio.NetFCtrlMACAddr: "CTRL_MAC_ADDR", virtio.NetFHostUSO: "HOST_USO",
	virtio.NetFGuestHdrLen: "GUEST_HDRLEN", virtio.NetFSpeedDuplex: "SPEED_DUPLEX",
	virtio.FNotifyOnEmpty: "NOTIFY_ON_EMPTY", virtio.FAnyLayout: "ANY_LAYOUT", virtio.FIndirectDesc: "INDIRECT_DESC",
	virtio.FEventIdx: "EVENT_IDX", virtio.FVersion1: "VERSION_1", virtio.FAccessPlatform: "ACCESS_PLATFORM",
	virtio.FRingPacked: "RING_PACKED", virtio.FInOrder: "IN_ORDER", virtio.FOrderPlatform: "ORDER_PLATFORM",
	virtio.FNotificationData: "NOTIFICATION_DATA", vhostuser.FLogAll: "LOG_ALL",
	vhostuser.FProtocolFeatures: "PROTOCOL_FEATURES",
}

// featureList names the bits of f, lowest first (unknown ones as bitN).
func featureList(f uint64) []string {
	out := []string{}
	for f != 0 {
		b := uint64(1) << bits.TrailingZeros64(f)
		f &^= b
		if n, ok := featureNames[b]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("bit%d", bits.TrailingZeros64(b)))
		}
	}
	return out
}

func counters(st *datapath.Stats) apiCounters {
	c := apiCounters{
		RxPackets: st.RxPackets.Load(), RxBytes: st.RxBytes.Load(),
		TxPackets: st.TxPackets.Load(), TxBytes: st.TxBytes.Load(),
		Drops: map[string]uint64{},
	}
	for r := datapath.DropReason(0); r < datapath.NumDropReasons; r++ {
		if n := st.Drops(r); n != 0 {
			c.Drops[r.String()] = n
		}
	}
	return c
}

// queueCounters returns the per-queue-pair counters of p, an empty list
// for a port without them.
func queueCounters(p datapath.Port) []apiQueueCounters {
	out := []apiQueueCounters{}
	qp, ok := p.(queuePorts)
	if !ok {
		return out
	}
	for i := 0; i < qp.QueuePairs(); i++ {
		qs := qp.QueueStats(i)
		out = append(out, apiQueueCounters{Queue: i,
			RxPackets: qs.RxPackets.Load(), RxBytes: qs.RxBytes.Load(),
			TxPackets: qs.TxPackets.Load(), TxBytes: qs.TxBytes.Load(), Held: qs.Held.Load()})
	}
	return out
}

// listPorts answers GET /v1/ports: live ports, then the ended ones still
// kept, each in the order they attached.
func (a *controlAPI) listPorts(*http.Request) (any, error) {
	live, ended := a.ports.snapshot()
	leases := map[string]services.Lease{}
	if a.net != nil {
		now := a.now()
		for _, l := range a.net.gw.Leases() {
			if l.State == services.LeaseBound && l.Expires.After(now) && l.MAC != nil {
				leases[l.MAC.String()] = l
			}
		}
	}
	out := apiPorts{Ports: []apiPort{}}
	add := func(gs []*guest, active bool) {
		for _, g := range sortedBy(gs, func(g *guest) uint64 { return g.info.ID }) {
			p := apiPort{
				Name: g.main().Name(), Active: active, Socket: g.info.Path, Role: g.info.Role.String(),
				ConfigMAC: net.HardwareAddr(g.info.MAC[:]).String(),
				MaxPairs:  a.queuePairs, Counters: counters(g.main().Stats()),
				Queues: queueCounters(g.main()),
			}
			if g.frame != nil {
				p.Role, p.ConfigMAC, p.MaxPairs = g.kind, "", 1 // a frame socket: no config space, one queue
			}
			p.MAC = p.ConfigMAC
			if g.sw != nil {
				if m, ok := g.sw.MAC(); ok {
					p.MAC = net.HardwareAddr(m[:]).String()
				}
			}
			if l, ok := leases[p.MAC]; ok {
				p.Address, p.Hostname = l.Addr.String(), l.Hostname
			}
			if active && g.frame != nil {
				p.Features, p.FeatureBits, p.QueuePairs = []string{}, "0x0", 1
			} else if active {
				f := g.rings.features.Load()
				p.Features, p.FeatureBits = featureList(f), fmt.Sprintf("%#x", f)
				p.QueuePairs = g.rings.pairs()
			} else {
				p.Features, p.FeatureBits = []string{}, "0x0"
			}
			if g.uplink != nil {
				p.Uplink = g.uplink.Name()
			}
			out.Ports = append(out.Ports, p)
		}
	}
	add(live, true)
	add(ended, false)
	return out, nil
}

// listLeases answers GET /v1/leases.
func (a *controlAPI) listLeases(*http.Request) (any, error) {
	n, err := a.guestNetwork("leases")
	if err != nil {
		return nil, err
	}
	res := map[string]string{}
	for _, r := range n.gw.Reservations() {
		res[r.MAC.String()] = r.Addr.String()
	}
	now := a.now()
	out := apiLeases{Leases: []apiLease{}}
	for _, l := range n.gw.Leases() {
		e := apiLease{Address: l.Addr.String(), Hostname: l.Hostname, State: l.State.String(),
			ExpiresIn: int64(l.Expires.Sub(now).Seconds())}
		if l.MAC != nil {
			e.MAC = l.MAC.String()
			e.Reserved = res[e.MAC] == e.Address
		}
		if l.State == services.LeaseBound && !l.Expires.After(now) {
			e.State = "expired"
		}
		out.Leases = append(out.Leases, e)
	}
	return out, nil
}

// listReservations answers GET /v1/reservations.
func (a *controlAPI) listReservations(*http.Request) (any, error) {
	n, err := a.guestNetwork("reservations")
	if err != nil {
		return nil, err
	}
	out := apiReservations{Reservations: []apiReservation{}}
	for _, r := range n.gw.Reservations() {
		out.Reservations = append(out.Reservations, apiReservation{MAC: r.MAC.String(), Address: r.Addr.String()})
	}
	return out, nil
}

const reservationExample = `{"mac": "52:54:00:12:34:56", "address": "192.168.127.10"}`

// addReservation answers POST /v1/reservations.
func (a *controlAPI) addReservation(r *http.Request) (any, error) {
	n, err := a.guestNetwork("reservations")
	if err != nil {
		return nil, err
	}
	var req apiReservation
	if err := decode(r, &req, reservationExample); err != nil {
		return nil, err
	}
	res, err := services.ParseReservation(req.MAC + "=" + req.Address)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%v: want %s", err, reservationExample)
	}
	if err := n.gw.AddReservation(res); err != nil {
		return nil, badIfPlain(err)
	}
	a.log.Info("reservation added", "mac", res.MAC.String(), "addr", res.Addr, "by", "control API")
	return apiReservation{MAC: res.MAC.String(), Address: res.Addr.String()}, nil
}

// removeReservation answers DELETE /v1/reservations/MAC.
func (a *controlAPI) removeReservation(r *http.Request) (any, error) {
	n, err := a.guestNetwork("reservations")
	if err != nil {
		return nil, err
	}
	mac, err := net.ParseMAC(r.PathValue("mac"))
	if err != nil || len(mac) != 6 {
		return nil, errorf(http.StatusBadRequest, "MAC %q: want a MAC address such as 52:54:00:12:34:56", r.PathValue("mac"))
	}
	res, err := n.gw.RemoveReservation(mac)
	if err != nil {
		return nil, err
	}
	a.log.Info("reservation removed", "mac", res.MAC.String(), "addr", res.Addr, "by", "control API")
	return apiReservation{MAC: res.MAC.String(), Address: res.Addr.String()}, nil
}

func (a *controlAPI) record(n *network, r services.Record) apiRecord {
	return apiRecord{Name: r.Name, FQDN: r.Name + "." + n.gw.Domain(), Address: r.Addr.String()}
}

// listRecords answers GET /v1/dns.
func (a *controlAPI) listRecords(*http.Request) (any, error) {
	n, err := a.guestNetwork("DNS records")
	if err != nil {
		return nil, err
	}
	out := apiRecords{Records: []apiRecord{}}
	for _, r := range n.gw.Records() {
		out.Records = append(out.Records, a.record(n, r))
	}
	return out, nil
}

const recordExample = `{"name": "db", "address": "192.168.127.20"}`

// addRecord answers POST /v1/dns.
func (a *controlAPI) addRecord(r *http.Request) (any, error) {
	n, err := a.guestNetwork("DNS records")
	if err != nil {
		return nil, err
	}
	var req apiRecord
	if err := decode(r, &req, recordExample); err != nil {
		return nil, err
	}
	addr, err := parseIPv4(req.Address)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "DNS record %s: address %q: %v", req.Name, req.Address, err)
	}
	rec, err := n.gw.AddRecord(req.Name, addr)
	if err != nil {
		return nil, badIfPlain(err)
	}
	a.log.Info("DNS record added", "name", rec.Name+"."+n.gw.Domain(), "addr", rec.Addr, "by", "control API")
	return a.record(n, rec), nil
}

// removeRecord answers DELETE /v1/dns/NAME.
func (a *controlAPI) removeRecord(r *http.Request) (any, error) {
	n, err := a.guestNetwork("DNS records")
	if err != nil {
		return nil, err
	}
	rec, err := n.gw.RemoveRecord(r.PathValue("name"))
	if err != nil {
		return nil, badIfPlain(err)
	}
	a.log.Info("DNS record removed", "name", rec.Name+"."+n.gw.Domain(), "addr", rec.Addr, "by", "control API")
	return a.record(n, rec), nil
}

// badIfPlain makes an error of the gateway that is neither "not found" nor
// a conflict a 400: the request's value was wrong.
func badIfPlain(err error) error {
	if statusOf(err) == http.StatusInternalServerError {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	return err
}
