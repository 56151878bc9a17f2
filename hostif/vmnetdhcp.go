package hostif

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// DHCP over the vmnet frame link: vhost-arcnet is a DHCP client of vmnet
// (RFC 2131) on its own MAC, so that it holds an address of the vmnet
// network that it NATs every guest behind. Messages are built and parsed
// with insomniacslk/dhcp's dhcpv4; the Ethernet, IPv4 and UDP around them
// are built here.

const (
	dhcpServerPort = 67
	dhcpClientPort = 68
	// dhcpDefaultLease is the lease duration assumed when an ACK has no
	// option 51, which RFC 2131 §4.3.1 requires in an ACK to a REQUEST.
	dhcpDefaultLease = time.Hour
)

// errLeaseLost is returned when the server refuses to extend the lease
// (DHCPNAK) or the lease expired unrenewed.
var errLeaseLost = errors.New("DHCP lease lost")

// VMNetLease is the address vhost-arcnet holds on the vmnet link, from the
// DHCPACK of vmnet's DHCP server.
type VMNetLease struct {
	// Addr is yiaddr; Prefix is Addr with the subnet mask (option 1;
	// /32 when the server gave none).
	Addr   netip.Addr
	Prefix netip.Prefix
	// Router is the first address of option 3 (the next hop of every
	// routed packet), invalid when the server gave none.
	Router netip.Addr
	// DNS are the servers of option 6.
	DNS []netip.Addr
	// Server is the server identifier (option 54); ServerMAC the source
	// MAC of the frame that carried the ACK (where unicast renewals go).
	Server    netip.Addr
	ServerMAC header.MAC
	// Obtained is when the ACK arrived; Duration, T1 and T2 are the lease
	// time (option 51), renewal time (58, default 0.5 of it) and
	// rebinding time (59, default 0.875), RFC 2131 §4.4.5.
	Obtained         time.Time
	Duration, T1, T2 time.Duration
}

// dhcpReply is one server message for the client.
type dhcpReply struct {
	msg *dhcpv4.DHCPv4
	src header.MAC
}

// dhcpClient runs the client side of RFC 2131 over a frame link.
type dhcpClient struct {
	mac      header.MAC
	hostname string
	send     func(frame []byte) error
	clock    func() time.Time
	log      *slog.Logger
	// retry is the first retransmission interval; it doubles up to
	// retryMax. RFC 2131 §4.1 suggests 4 s doubling to 64 s for a
	// "10Mb/sec Ethernet"; on vmnet's local link the first answer comes
	// in milliseconds, so the client starts at 1 s and stops doubling at
	// 8 s (both randomised by ±25 %).
	retry, retryMax time.Duration
	// renewMin is the shortest wait between two renewal attempts: RFC
	// 2131 §4.4.5 "down to a minimum of 60 seconds".
	renewMin time.Duration

	xid     atomic.Uint32 // the transaction the client waits for; 0: none
	replies chan dhcpReply
	ipID    atomic.Uint32
}

func newDHCPClient(mac header.MAC, hostname string, send func([]byte) error, log *slog.Logger) *dhcpClient {
	return &dhcpClient{
		mac: mac, hostname: hostname, send: send, clock: time.Now, log: log,
		retry: time.Second, retryMax: 8 * time.Second, renewMin: time.Minute,
		replies: make(chan dhcpReply, 8),
	}
}

// isDHCPClientFrame reports whether frame is an IPv4 UDP datagram to the
// DHCP client port (68): a reply for the client, taken off the uplink
// before the router. It reads only the fixed headers and does not
// allocate; the reader calls it on every frame.
func isDHCPClientFrame(frame []byte) bool {
	if len(frame) < header.EthernetMinSize+header.IPv4MinSize+header.UDPSize ||
		binary.BigEndian.Uint16(frame[12:]) != header.EtherTypeIPv4 {
		return false
	}
	ip := frame[header.EthernetMinSize:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < header.IPv4MinSize || ip[9] != header.ProtoUDP || len(ip) < ihl+header.UDPSize {
		return false
	}
	// Only first fragments carry the UDP header.
	if binary.BigEndian.Uint16(ip[6:])&0x1fff != 0 {
		return false
	}
	return binary.BigEndian.Uint16(ip[ihl+2:]) == dhcpClientPort
}

// parseDHCPReply parses a frame isDHCPClientFrame accepted: the IPv4 and
// UDP lengths are checked against the frame, the UDP checksum if present
// (RFC 768), and the payload must be a BOOTREPLY for mac (RFC 2131 §2:
// chaddr). The frame's bytes are not kept.
func parseDHCPReply(frame []byte, mac header.MAC) (dhcpReply, error) {
	if !isDHCPClientFrame(frame) {
		return dhcpReply{}, errors.New("not a DHCP client frame")
	}
	ip := header.IPv4(frame[header.EthernetMinSize:])
	ihl := ip.HeaderLen()
	tl := int(ip.TotalLength())
	if tl < ihl+header.UDPSize || tl > len(ip) {
		return dhcpReply{}, fmt.Errorf("IPv4 total length %d: frame holds %d", tl, len(ip))
	}
	if header.Checksum(ip[:ihl], 0) != 0xffff {
		return dhcpReply{}, errors.New("bad IPv4 header checksum")
	}
	u := header.UDP(ip[ihl:tl])
	ul := int(binary.BigEndian.Uint16(u[4:]))
	if ul < header.UDPSize || ul > len(u) {
		return dhcpReply{}, fmt.Errorf("UDP length %d: packet holds %d", ul, len(u))
	}
	u = u[:ul]
	if binary.BigEndian.Uint16(u[0:]) != dhcpServerPort {
		return dhcpReply{}, fmt.Errorf("from UDP port %d, not the server port", binary.BigEndian.Uint16(u[0:]))
	}
	if binary.BigEndian.Uint16(u[6:]) != 0 {
		src, _ := netip.AddrFromSlice(ip[12:16])
		dst, _ := netip.AddrFromSlice(ip[16:20])
		if header.Checksum(u, header.PseudoHeaderChecksum(header.ProtoUDP, src, dst, uint16(ul))) != 0xffff {
			return dhcpReply{}, errors.New("bad UDP checksum")
		}
	}
	m, err := dhcpv4.FromBytes(u[header.UDPSize:])
	if err != nil {
		return dhcpReply{}, fmt.Errorf("DHCP message: %w", err)
	}
	if m.OpCode != dhcpv4.OpcodeBootReply {
		return dhcpReply{}, fmt.Errorf("DHCP op %v, want BOOTREPLY", m.OpCode)
	}
	if len(m.ClientHWAddr) != 6 || header.MAC(m.ClientHWAddr) != mac {
		return dhcpReply{}, fmt.Errorf("DHCP reply for %v, not %v", m.ClientHWAddr, mac)
	}
	return dhcpReply{msg: m, src: header.MAC(frame[6:12])}, nil
}

// handleFrame takes a DHCP client frame off the link. Replies that are
// malformed or for another transaction are dropped (logged at debug: the
// link is vmnet's, but in bridged mode other hosts' traffic arrives too).
func (c *dhcpClient) handleFrame(frame []byte) {
	r, err := parseDHCPReply(frame, c.mac)
	if err != nil {
		c.log.Debug("vmnet: DHCP frame dropped", "err", err)
		return
	}
	if uint32(r.msg.TransactionID[0])<<24|uint32(r.msg.TransactionID[1])<<16|
		uint32(r.msg.TransactionID[2])<<8|uint32(r.msg.TransactionID[3]) != c.xid.Load() {
		return
	}
	select {
	case c.replies <- r:
	default: // the client is not keeping up with a flood: drop
	}
}

// frame wraps the DHCP message m in UDP, IPv4 and Ethernet headers, from
// src (0.0.0.0 before the client has an address, RFC 2131 §4.1) to dst.
func (c *dhcpClient) frame(m *dhcpv4.DHCPv4, dstMAC header.MAC, src, dst netip.Addr) []byte {
	p := m.ToBytes()
	ulen := header.UDPSize + len(p)
	f := make([]byte, header.EthernetMinSize+header.IPv4MinSize+ulen)
	header.Ethernet(f).Encode(&header.EthernetFields{Dst: dstMAC, Src: c.mac, EtherType: header.EtherTypeIPv4})
	header.IPv4(f[header.EthernetMinSize:]).Encode(&header.IPv4Fields{
		TotalLength: uint16(header.IPv4MinSize + ulen),
		ID:          uint16(c.ipID.Add(1)),
		TTL:         64,
		Protocol:    header.ProtoUDP,
		Src:         src,
		Dst:         dst,
	})
	u := header.UDP(f[header.EthernetMinSize+header.IPv4MinSize:])
	u.Encode(&header.UDPFields{SrcPort: dhcpClientPort, DstPort: dhcpServerPort, Length: uint16(ulen)})
	copy(u[header.UDPSize:], p)
	cs := ^header.Checksum(u, header.PseudoHeaderChecksum(header.ProtoUDP, src, dst, uint16(ulen)))
	if cs == 0 {
		cs = 0xffff // RFC 768
	}
	u.SetChecksum(cs)
	return f
}

// message builds a client message of type typ for transaction xid with
// the options every client message carries: client identifier (RFC 2132
// §9.14, type 1 + MAC), host name, parameter request list.
func (c *dhcpClient) message(typ dhcpv4.MessageType, xid uint32, mods ...dhcpv4.Modifier) (*dhcpv4.DHCPv4, error) {
	var id dhcpv4.TransactionID
	binary.BigEndian.PutUint32(id[:], xid)
	base := []dhcpv4.Modifier{
		dhcpv4.WithTransactionID(id),
		dhcpv4.WithHwAddr(net.HardwareAddr(c.mac[:])),
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier(append([]byte{1}, c.mac[:]...))),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter,
			dhcpv4.OptionDomainNameServer, dhcpv4.OptionInterfaceMTU, dhcpv4.OptionIPAddressLeaseTime,
			dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue),
	}
	if c.hostname != "" {
		base = append(base, dhcpv4.WithOption(dhcpv4.OptHostName(c.hostname)))
	}
	return dhcpv4.New(append(base, mods...)...)
}

// exchange sends the message build makes (a new transaction each call to
// exchange; the same message on each retransmission) until a reply accept
// takes arrives, ctx ends or until passes. Retransmissions back off from
// c.retry, doubling up to c.retryMax, randomised (RFC 2131 §4.1), never
// later than until; with once there is none (renewals space their
// attempts themselves).
func (c *dhcpClient) exchange(ctx context.Context, until time.Time, once bool, build func(xid uint32) ([]byte, error),
	accept func(dhcpReply) bool) (dhcpReply, error) {
	xid := rand.Uint32() | 1 // never 0, "none"
	c.xid.Store(xid)
	defer c.xid.CompareAndSwap(xid, 0)
	f, err := build(xid)
	if err != nil {
		return dhcpReply{}, err
	}
	wait := c.retry
	for {
		now := c.clock()
		if !now.Before(until) {
			return dhcpReply{}, context.DeadlineExceeded
		}
		if err := c.send(f); err != nil {
			c.log.Debug("vmnet: sending a DHCP message failed", "err", err)
		}
		d := min(jitter(wait), until.Sub(now))
		if once {
			d = until.Sub(now)
		}
		t := time.NewTimer(d)
	recv:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return dhcpReply{}, ctx.Err()
			case r := <-c.replies:
				if accept(r) {
					t.Stop()
					return r, nil
				}
			case <-t.C:
				break recv
			}
		}
		wait = min(2*wait, c.retryMax)
	}
}

// earliest returns the earlier of a and b.
func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// jitter randomises d by ±25 %.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/4 + rand.N(d/2+1)
}

// isType reports whether r is a DHCP message of one of types.
func isType(r dhcpReply, types ...dhcpv4.MessageType) bool {
	return slices.Contains(types, r.msg.MessageType())
}

// acquire gets a lease (RFC 2131 §3.1, §3.2). With a valid hint (the
// address held before a helper restart) it first asks for that address
// without a DISCOVER (INIT-REBOOT, §4.3.2: server identifier absent,
// requested address set); a NAK or no answer falls back to DISCOVER,
// still asking for hint (option 50 in a DISCOVER is allowed, Table 5).
// It gives up at until.
func (c *dhcpClient) acquire(ctx context.Context, hint netip.Addr, until time.Time) (VMNetLease, error) {
	bcast := netip.IPv4Unspecified()
	all := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	if hint.Is4() {
		ack, err := c.exchange(ctx, earliest(until, c.clock().Add(4*c.retry)), false, func(xid uint32) ([]byte, error) {
			m, err := c.message(dhcpv4.MessageTypeRequest, xid,
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(hint.AsSlice())))
			if err != nil {
				return nil, err
			}
			return c.frame(m, header.BroadcastMAC, bcast, all), nil
		}, func(r dhcpReply) bool { return isType(r, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak) })
		switch {
		case err == nil && isType(ack, dhcpv4.MessageTypeAck):
			return c.lease(ack)
		case ctx.Err() != nil:
			return VMNetLease{}, ctx.Err()
		case err == nil:
			c.log.Info("vmnet: DHCP server refused the address held before; asking for a new lease",
				"address", hint, "message", ack.msg.Message())
		}
	}
	for {
		offer, err := c.exchange(ctx, until, false, func(xid uint32) ([]byte, error) {
			var mods []dhcpv4.Modifier
			if hint.Is4() {
				mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(hint.AsSlice())))
			}
			m, err := c.message(dhcpv4.MessageTypeDiscover, xid, mods...)
			if err != nil {
				return nil, err
			}
			return c.frame(m, header.BroadcastMAC, bcast, all), nil
		}, func(r dhcpReply) bool {
			a, ok := netip.AddrFromSlice(r.msg.YourIPAddr.To4())
			return isType(r, dhcpv4.MessageTypeOffer) && ok && a.IsGlobalUnicast() && r.msg.ServerIdentifier() != nil
		})
		if err != nil {
			return VMNetLease{}, fmt.Errorf("no DHCP offer: %w", err)
		}
		// RFC 2131 §3.1 step 3: REQUEST with the server identifier of the
		// chosen offer and its yiaddr as the requested address.
		ack, err := c.exchange(ctx, until, false, func(xid uint32) ([]byte, error) {
			m, err := c.message(dhcpv4.MessageTypeRequest, xid,
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.msg.YourIPAddr)),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.msg.ServerIdentifier())))
			if err != nil {
				return nil, err
			}
			return c.frame(m, header.BroadcastMAC, bcast, all), nil
		}, func(r dhcpReply) bool { return isType(r, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak) })
		if err != nil {
			return VMNetLease{}, fmt.Errorf("no DHCP acknowledgement: %w", err)
		}
		if isType(ack, dhcpv4.MessageTypeAck) {
			// RFC 2131 §4.4.1 says the client SHOULD probe the address
			// with ARP first; vmnet's server is the only one on its
			// network and hands out addresses from its own pool, so the
			// probe (and its seconds of delay) is left out.
			return c.lease(ack)
		}
		// NAK: §3.1 step 5, start over.
		c.log.Info("vmnet: DHCP server refused the offered address; starting over", "message", ack.msg.Message())
	}
}

// renew extends l (RFC 2131 §4.4.5): from T1 unicast REQUESTs to the
// server (RENEWING), from T2 broadcast ones (REBINDING), each with ciaddr
// set and neither server identifier nor requested address (Table 5); the
// wait between attempts is half the time left, at least c.renewMin. It
// returns the extended lease, errLeaseLost on a NAK or at expiry, or ctx's
// error.
func (c *dhcpClient) renew(ctx context.Context, l VMNetLease) (VMNetLease, error) {
	expiry := l.Obtained.Add(l.Duration)
	t2 := l.Obtained.Add(l.T2)
	for {
		now := c.clock()
		if !now.Before(expiry) {
			return VMNetLease{}, errLeaseLost
		}
		rebinding := !now.Before(t2)
		end := t2
		if rebinding {
			end = expiry
		}
		try := min(max((end.Sub(now))/2, c.renewMin), expiry.Sub(now))
		ack, err := c.exchange(ctx, now.Add(try), true, func(xid uint32) ([]byte, error) {
			m, err := c.message(dhcpv4.MessageTypeRequest, xid, dhcpv4.WithClientIP(l.Addr.AsSlice()))
			if err != nil {
				return nil, err
			}
			if rebinding {
				return c.frame(m, header.BroadcastMAC, l.Addr, netip.AddrFrom4([4]byte{255, 255, 255, 255})), nil
			}
			return c.frame(m, l.ServerMAC, l.Addr, l.Server), nil
		}, func(r dhcpReply) bool { return isType(r, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak) })
		switch {
		case err == nil && isType(ack, dhcpv4.MessageTypeAck):
			return c.lease(ack)
		case err == nil:
			return VMNetLease{}, fmt.Errorf("%w: DHCPNAK: %s", errLeaseLost, ack.msg.Message())
		case ctx.Err() != nil:
			return VMNetLease{}, ctx.Err()
		}
	}
}

// lease turns an ACK into a VMNetLease; an ACK without a usable address
// is an error.
func (c *dhcpClient) lease(r dhcpReply) (VMNetLease, error) {
	m := r.msg
	a, ok := netip.AddrFromSlice(m.YourIPAddr.To4())
	if !ok || !a.IsGlobalUnicast() {
		return VMNetLease{}, fmt.Errorf("DHCPACK without a usable address (yiaddr %v)", m.YourIPAddr)
	}
	l := VMNetLease{Addr: a, Prefix: netip.PrefixFrom(a, 32), ServerMAC: r.src, Obtained: c.clock()}
	if mask := m.SubnetMask(); mask != nil {
		ones, bits := mask.Size()
		if bits != 32 || ones == 0 {
			return VMNetLease{}, fmt.Errorf("DHCPACK with subnet mask %v: not a contiguous IPv4 mask", net.IP(mask))
		}
		l.Prefix = netip.PrefixFrom(a, ones)
	}
	for _, r := range m.Router() {
		if ra, ok := netip.AddrFromSlice(r.To4()); ok && ra.IsGlobalUnicast() && ra != a {
			l.Router = ra
			break
		}
	}
	for _, d := range m.DNS() {
		if da, ok := netip.AddrFromSlice(d.To4()); ok && da.IsValid() && !da.IsUnspecified() {
			l.DNS = append(l.DNS, da)
		}
	}
	if s, ok := netip.AddrFromSlice(m.ServerIdentifier().To4()); ok {
		l.Server = s
	} else if s, ok := netip.AddrFromSlice(m.ServerIPAddr.To4()); ok && !s.IsUnspecified() {
		l.Server = s
	}
	l.Duration = m.IPAddressLeaseTime(dhcpDefaultLease)
	if l.Duration <= 0 {
		l.Duration = dhcpDefaultLease
	}
	// RFC 2131 §4.4.5 defaults; a server's T1/T2 outside the lease are
	// replaced by them.
	l.T1 = m.IPAddressRenewalTime(l.Duration / 2)
	l.T2 = m.IPAddressRebindingTime(l.Duration * 7 / 8)
	if l.T2 <= 0 || l.T2 > l.Duration {
		l.T2 = l.Duration * 7 / 8
	}
	if l.T1 <= 0 || l.T1 > l.T2 {
		l.T1 = min(l.Duration/2, l.T2)
	}
	return l, nil
}
