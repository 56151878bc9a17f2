package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// RefusalMode says what happens to a packet that would open a flow when a
// limit is reached.
type RefusalMode uint8

const (
	// RefuseDrop drops it silently (counted).
	RefuseDrop RefusalMode = iota
	// RefuseICMP answers with ICMP destination unreachable, code 13
	// "communication administratively prohibited" (RFC 1812 §5.2.7.1),
	// built in place of the packet when its buffer has room.
	RefuseICMP
)

// Timeouts are idle timeouts per protocol and TCP state. Zero fields take the
// defaults of DefaultTimeouts.
type Timeouts struct {
	TCPSynSent     time.Duration
	TCPSynRecv     time.Duration
	TCPEstablished time.Duration
	TCPFinWait     time.Duration
	TCPCloseWait   time.Duration
	TCPLastAck     time.Duration
	TCPTimeWait    time.Duration
	TCPClose       time.Duration
	UDP            time.Duration // a UDP flow that has seen no reply
	UDPStream      time.Duration // a UDP flow with traffic both ways
	ICMP           time.Duration // an ICMP echo flow
	Fragment       time.Duration // how long later fragments follow a first fragment
}

// DefaultTimeouts returns the default timeouts: Linux nf_conntrack's for TCP
// (they keep transitory states shorter than RFC 5382 REQ-5's 4 minutes, and
// established flows 5 days, longer than its 2 h 4 min minimum) and RFC 4787
// REQ-5's recommended 5 minutes for UDP with traffic both ways (2 minutes,
// its minimum, before a reply), 30 s for ICMP echo (RFC 5508 REQ-1 asks for
// at least 60 s only when configurable per query type; Linux uses 30 s).
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPSynSent:     120 * time.Second,
		TCPSynRecv:     60 * time.Second,
		TCPEstablished: 5 * 24 * time.Hour,
		TCPFinWait:     120 * time.Second,
		TCPCloseWait:   60 * time.Second,
		TCPLastAck:     30 * time.Second,
		TCPTimeWait:    120 * time.Second,
		TCPClose:       10 * time.Second,
		UDP:            120 * time.Second,
		UDPStream:      300 * time.Second,
		ICMP:           30 * time.Second,
		Fragment:       30 * time.Second,
	}
}

func (t *Timeouts) fill() {
	d := DefaultTimeouts()
	for _, p := range []struct{ v, def *time.Duration }{
		{&t.TCPSynSent, &d.TCPSynSent}, {&t.TCPSynRecv, &d.TCPSynRecv}, {&t.TCPEstablished, &d.TCPEstablished},
		{&t.TCPFinWait, &d.TCPFinWait}, {&t.TCPCloseWait, &d.TCPCloseWait}, {&t.TCPLastAck, &d.TCPLastAck},
		{&t.TCPTimeWait, &d.TCPTimeWait}, {&t.TCPClose, &d.TCPClose}, {&t.UDP, &d.UDP},
		{&t.UDPStream, &d.UDPStream}, {&t.ICMP, &d.ICMP}, {&t.Fragment, &d.Fragment},
	} {
		if *p.v <= 0 {
			*p.v = *p.def
		}
	}
}

// Config configures an Engine.
type Config struct {
	// External is the uplink's IPv4 address that guest traffic is translated
	// to and that port forwards listen on. Required.
	External netip.Addr
	// GuestPrefix is the guest subnet. Outbound packets must come from it.
	// Required.
	GuestPrefix netip.Prefix
	// Router is the source address of the ICMP errors the engine generates
	// toward guests (the gateway). Default: the refused packet's destination.
	Router netip.Addr
	// PortMin and PortMax bound the external ports chosen when a guest's own
	// port is taken. Default 1024..65535.
	PortMin, PortMax uint16
	// SharedAddress keeps every external TCP/UDP port and ICMP echo
	// identifier inside PortMin..PortMax, the guest's own one too (port
	// preservation only inside the range): for an External address the
	// host also uses (the XDP uplink), whose other ports are the host's.
	SharedAddress bool
	// MaxFlows is the global flow limit. Default 65536.
	MaxFlows int
	// MaxFlowsPerGuest is each guest's flow quota. Default MaxFlows/4
	// (at least 1).
	MaxFlowsPerGuest int
	// MaxFragments bounds the table of first fragments that later fragments
	// follow (rounded up to a power of two). Default 1024.
	MaxFragments int
	// CacheSize is the number of entries of the direct-mapped cache in
	// front of the index (rounded up to a power of two). Default 4096;
	// negative disables it. Only lookups under the engine's lock use it
	// (new flows, state changes, ICMP errors): packets of established flows
	// probe the index directly (fast.go).
	CacheSize int
	// Timeouts are the idle timeouts; zero fields take the defaults.
	Timeouts Timeouts
	// Refusal says how refused new flows are answered.
	Refusal RefusalMode
	// Clock returns the current time. It is read once per Translate or
	// Expire call. Default time.Now.
	Clock func() time.Time
}

func (c *Config) fill() error {
	if !c.External.Is4() {
		return fmt.Errorf("external address %v: %w", c.External, errNotIPv4)
	}
	if !c.GuestPrefix.IsValid() || !c.GuestPrefix.Addr().Is4() {
		return fmt.Errorf("guest prefix %v: %w", c.GuestPrefix, errNotIPv4)
	}
	c.GuestPrefix = c.GuestPrefix.Masked()
	if c.GuestPrefix.Contains(c.External) {
		return errors.New("external address inside the guest prefix")
	}
	if c.Router.IsValid() && !c.Router.Is4() {
		return fmt.Errorf("router address %v: %w", c.Router, errNotIPv4)
	}
	if c.PortMin == 0 && c.PortMax == 0 {
		c.PortMin, c.PortMax = 1024, 65535
	}
	if c.PortMin == 0 || c.PortMin > c.PortMax {
		return fmt.Errorf("port range %d..%d: invalid", c.PortMin, c.PortMax)
	}
	if c.MaxFlows <= 0 {
		c.MaxFlows = 65536
	}
	if c.MaxFlows > 1<<28 {
		return fmt.Errorf("max flows %d: too large", c.MaxFlows)
	}
	if c.MaxFlowsPerGuest <= 0 {
		c.MaxFlowsPerGuest = max(c.MaxFlows/4, 1)
	}
	if c.MaxFragments <= 0 {
		c.MaxFragments = 1024
	}
	c.MaxFragments = min(c.MaxFragments, 1<<20)
	if c.CacheSize == 0 {
		c.CacheSize = 4096
	}
	c.CacheSize = min(c.CacheSize, 1<<20)
	c.Timeouts.fill()
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return nil
}

var errNotIPv4 = errors.New("not an IPv4 address")
