package main

import (
	"container/heap"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/arcnet/vhost-arcnet/hostif"
	"github.com/arcnet/vhost-arcnet/nat"
)

// NAT flows, a page at a time, and port forwards added and removed at run
// time.

const (
	defaultFlowPage = 100
	maxFlowPage     = 1000
)

// flowKey orders flows for paging: protocol, then the original direction's
// source and destination (unique in the table).
type flowKey struct {
	proto    nat.Proto
	src, dst netip.AddrPort
}

func (k flowKey) compare(o flowKey) int {
	if k.proto != o.proto {
		return int(k.proto) - int(o.proto)
	}
	if c := k.src.Compare(o.src); c != 0 {
		return c
	}
	return k.dst.Compare(o.dst)
}

// String is the flow's ID: PROTO/SRC/DST of its original direction.
func (k flowKey) String() string {
	return k.proto.String() + "/" + k.src.String() + "/" + k.dst.String()
}

func parseFlowKey(s string) (flowKey, error) {
	parts := strings.Split(s, "/")
	bad := fmt.Errorf("after=%q: want a flow's id, PROTO/SRC/DST such as tcp/192.168.127.10:40000/192.0.2.1:80", s)
	if len(parts) != 3 {
		return flowKey{}, bad
	}
	var k flowKey
	switch parts[0] {
	case "tcp":
		k.proto = nat.TCP
	case "udp":
		k.proto = nat.UDP
	case "icmp":
		k.proto = nat.ICMP
	default:
		return flowKey{}, bad
	}
	var err1, err2 error
	k.src, err1 = netip.ParseAddrPort(parts[1])
	k.dst, err2 = netip.ParseAddrPort(parts[2])
	if err1 != nil || err2 != nil {
		return flowKey{}, bad
	}
	return k, nil
}

// flowHeap keeps the smallest flows seen: a max-heap on flowKey.
type flowHeap []nat.FlowInfo

func keyOf(f nat.FlowInfo) flowKey { return flowKey{f.Orig.Proto, f.Orig.Src, f.Orig.Dst} }

func (h flowHeap) Len() int           { return len(h) }
func (h flowHeap) Less(i, j int) bool { return keyOf(h[i]).compare(keyOf(h[j])) > 0 }
func (h flowHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *flowHeap) Push(x any)        { *h = append(*h, x.(nat.FlowInfo)) }
func (h *flowHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// listFlows answers GET /v1/flows?limit=N&after=ID: the flows after ID in
// the order of their IDs, at most N (default 100, at most 1000). One walk
// of the table under the engine's lock keeps the N+1 smallest in a heap.
func (a *controlAPI) listFlows(r *http.Request) (any, error) {
	q := r.URL.Query()
	limit := defaultFlowPage
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxFlowPage {
			return nil, errorf(http.StatusBadRequest, "limit=%q: want 1..%d", s, maxFlowPage)
		}
		limit = n
	}
	var after *flowKey
	if s := q.Get("after"); s != "" {
		k, err := parseFlowKey(s)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "%v", err)
		}
		after = &k
	}
	for k := range q {
		if k != "limit" && k != "after" {
			return nil, errorf(http.StatusBadRequest, "unknown parameter %q: /v1/flows takes limit and after", k)
		}
	}
	out := apiFlows{Flows: []apiFlow{}}
	n, err := a.guestNetwork("flows")
	if err != nil {
		return nil, err
	}
	if n.eng == nil {
		return out, nil // --uplink none: no NAT, no flows
	}
	h := make(flowHeap, 0, limit+1)
	n.eng.Flows(func(f nat.FlowInfo) bool {
		out.Total++
		if after != nil && keyOf(f).compare(*after) <= 0 {
			return true
		}
		if len(h) <= limit {
			heap.Push(&h, f)
		} else if keyOf(f).compare(keyOf(h[0])) < 0 {
			h[0] = f
			heap.Fix(&h, 0)
		}
		return true
	})
	more := len(h) > limit
	if more {
		heap.Pop(&h) // the largest: first of the next page
	}
	page := make([]nat.FlowInfo, len(h))
	for i := len(h) - 1; i >= 0; i-- {
		page[i] = heap.Pop(&h).(nat.FlowInfo)
	}
	now := a.now()
	for _, f := range page {
		af := apiFlow{
			ID: keyOf(f).String(), Proto: f.Orig.Proto.String(), Side: f.OrigSide.String(),
			Orig:      apiEndpoint{Src: f.Orig.Src.String(), Dst: f.Orig.Dst.String()},
			Reply:     apiEndpoint{Src: f.Reply.Src.String(), Dst: f.Reply.Dst.String()},
			ExpiresIn: int64(f.Expires.Sub(now).Seconds()),
		}
		if f.Orig.Proto == nat.TCP {
			af.State = f.State.String()
		}
		out.Flows = append(out.Flows, af)
	}
	if more && len(out.Flows) > 0 {
		out.Next = out.Flows[len(out.Flows)-1].ID
	}
	return out, nil
}

// listForwards answers GET /v1/forwards.
func (a *controlAPI) listForwards(*http.Request) (any, error) {
	out := apiForwards{Forwards: []apiForward{}}
	n, err := a.guestNetwork("forwards")
	if err != nil {
		return nil, err
	}
	for _, f := range n.forwarders() {
		out.Forwards = append(out.Forwards, n.describeForward(f))
	}
	return out, nil
}

// describeForward is f as the API shows it.
func (n *network) describeForward(f *hostif.Forwarder) apiForward {
	n.fwdMu.Lock()
	defer n.fwdMu.Unlock()
	return n.describeLocked(f)
}

// describeLocked is describeForward with fwdMu held.
func (n *network) describeLocked(f *hostif.Forwarder) apiForward {
	spec, st := f.Spec(), f.Stats()
	af := apiForward{
		Spec: spec.String(), Proto: spec.Proto, Listen: f.Addr().String(), Guest: spec.Guest, GuestPort: spec.GuestPort,
		Origin: "config", Accepted: st.Accepted, Active: st.Active, FailedPrepare: st.FailedPrepare,
		FailedDial: st.FailedDial, ToGuestBytes: st.ToGuestBytes, FromGuestBytes: st.FromGuestBytes,
	}
	if n.fwdAdded[spec] {
		af.Origin = "api"
	}
	proto := nat.TCP
	if spec.Proto == "udp" {
		proto = nat.UDP
	}
	for _, nf := range n.eng.Forwards() {
		if nf.Proto == proto && nf.Port == spec.HostPort {
			af.Target = nf.Guest.String()
		}
	}
	if af.Target == "" {
		if _, err := n.resolveGuest(spec.Guest); err != nil {
			af.Pending = err.Error() + "; the forward reaches the guest once it does"
		}
	}
	return af
}

const forwardExample = `{"spec": "tcp:8080:web:80"}`

// addForward answers POST /v1/forwards.
func (a *controlAPI) addForward(r *http.Request) (any, error) {
	n, err := a.guestNetwork("forwards")
	if err != nil {
		return nil, err
	}
	var req apiForwardRequest
	if err := decode(r, &req, forwardExample); err != nil {
		return nil, err
	}
	spec, err := hostif.ParseForward(req.Spec)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%v", err)
	}
	if n.eng == nil {
		return nil, errorf(http.StatusConflict, "forward %s: port forwards need an uplink that leaves the host: this vhost-arcnet runs with --uplink %s (use --uplink tap)", spec, a.uplink)
	}
	f, err := n.addForward(spec, byAPI)
	if err != nil {
		return nil, err
	}
	return n.describeForward(f), nil
}

// removeForward answers DELETE /v1/forwards/SPEC.
func (a *controlAPI) removeForward(r *http.Request) (any, error) {
	n, err := a.guestNetwork("forwards")
	if err != nil {
		return nil, err
	}
	ref := r.PathValue("spec")
	match, err := parseForwardRef(ref)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%v", err)
	}
	return n.removeForward(ref, match, byAPI)
}

// parseForwardRef parses what names a forward to remove: its whole spec,
// or tcp|udp:[HOSTADDR:]HOSTPORT (the address and port it listens on).
func parseForwardRef(s string) (func(hostif.ForwardSpec) bool, error) {
	if spec, err := hostif.ParseForward(s); err == nil {
		return func(o hostif.ForwardSpec) bool { return o == spec }, nil
	}
	bad := fmt.Errorf("forward %q: want the forward's spec (%s) or tcp|udp:[HOSTADDR:]HOSTPORT", s, hostif.ForwardSyntax)
	proto, rest, ok := strings.Cut(s, ":")
	if !ok || (proto != "tcp" && proto != "udp") {
		return nil, bad
	}
	addr := hostif.DefaultForwardHostAddr
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		a, err := netip.ParseAddr(strings.Trim(rest[:i], "[]"))
		if err != nil {
			return nil, bad
		}
		addr, rest = a, rest[i+1:]
	}
	port, err := strconv.ParseUint(rest, 10, 16)
	if err != nil || port == 0 {
		return nil, bad
	}
	want := netip.AddrPortFrom(addr, uint16(port))
	return func(o hostif.ForwardSpec) bool { return o.Proto == proto && o.HostAddrPort() == want }, nil
}

// Who changes the forwards at run time, for the log and the forwards'
// origin.
const (
	byAPI    = "control API"
	byReload = "config reload"
)

// addForward starts a port forward at run time: it listens like a
// --forward one (the host port must be free) and the NAT engine forwards
// its port as soon as the guest can be resolved. by is byAPI (the
// forward's origin is "api": gone at exit) or byReload (origin "config").
func (n *network) addForward(spec hostif.ForwardSpec, by string) (*hostif.Forwarder, error) {
	check := func() error {
		if n.fwdClosed {
			return errorf(http.StatusConflict, "forward %s: vhost-arcnet is stopping", spec)
		}
		for _, f := range n.fwds {
			o := f.Spec()
			switch {
			case o == spec:
				return errorf(http.StatusConflict, "forward %s exists already", spec)
			case o.Proto == spec.Proto && o.HostPort == spec.HostPort:
				return errorf(http.StatusConflict, "forward %s: %s port %d is forwarded by %s already (the NAT address has one forward per port): remove that one first or choose another HOSTPORT",
					spec, spec.Proto, spec.HostPort, o)
			}
		}
		return nil
	}
	n.fwdMu.Lock()
	err := check()
	n.fwdMu.Unlock()
	if err != nil {
		return nil, err
	}
	f, err := n.newForwarder(spec, n.log)
	if err != nil {
		return nil, errorf(http.StatusConflict, "forward %s: %v", spec, err)
	}
	n.fwdMu.Lock()
	if err := check(); err != nil {
		n.fwdMu.Unlock()
		_ = f.Close()
		return nil, err
	}
	n.fwds = append(n.fwds, f)
	if by == byAPI {
		if n.fwdAdded == nil {
			n.fwdAdded = map[hostif.ForwardSpec]bool{}
		}
		n.fwdAdded[spec] = true
	}
	n.serveForward(f)
	n.fwdMu.Unlock()
	err = n.programForward(spec)
	n.log.Info("forward added", "forward", spec.String(), "listen", f.Addr().String(), "by", by,
		"resolved", err == nil)
	return f, nil
}

// removeForward stops the forward match selects: its listener closes (new
// connections are refused), its relayed connections end, and the NAT
// engine forgets its port unless another forward uses it.
// It returns the forward as it was. by is byAPI or byReload, for the log.
func (n *network) removeForward(ref string, match func(hostif.ForwardSpec) bool, by string) (apiForward, error) {
	n.fwdMu.Lock()
	i := -1
	var specs []string
	for j, f := range n.fwds {
		specs = append(specs, f.Spec().String())
		if i < 0 && match(f.Spec()) {
			i = j
		}
	}
	if i < 0 {
		n.fwdMu.Unlock()
		now := "there are none"
		if len(specs) > 0 {
			now = "there are " + strings.Join(specs, ", ")
		}
		return apiForward{}, errorf(http.StatusNotFound, "no forward %s: %s", ref, now)
	}
	f := n.fwds[i]
	spec := f.Spec()
	desc := n.describeLocked(f)
	n.fwds = append(n.fwds[:i:i], n.fwds[i+1:]...)
	delete(n.fwdAdded, spec)
	shared := false
	for _, o := range n.fwds {
		if o.Spec().Proto == spec.Proto && o.Spec().HostPort == spec.HostPort {
			shared = true
		}
	}
	var err error
	if !shared {
		proto := nat.TCP
		if spec.Proto == "udp" {
			proto = nat.UDP
		}
		if err = n.eng.RemoveForward(proto, spec.HostPort); errors.Is(err, nat.ErrForward) {
			err = nil // never programmed: the guest was not resolved yet
		}
	}
	n.fwdMu.Unlock()
	cerr := f.Close()
	n.log.Info("forward removed", "forward", spec.String(), "by", by)
	if err = errors.Join(err, cerr); err != nil {
		return apiForward{}, errorf(http.StatusInternalServerError, "forward %s removed, with an error: %v", spec, err)
	}
	return desc, nil
}

// parseIPv4 parses a dotted-quad IPv4 address.
func parseIPv4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, errors.New("want an IPv4 address such as 192.168.127.20")
	}
	return a, nil
}
