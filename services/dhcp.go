package services

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/insomniacslk/dhcp/rfc1035label"
)

// DHCP UDP ports (RFC 2131 §4.1).
const (
	dhcpServerPort = 67
	dhcpClientPort = 68
)

// dhcpServer is the DHCPv4 server state machine (RFC 2131 §4.3) on the
// insomniacslk/dhcp message model. It is transport-free: handle takes a
// parsed message and returns the reply and where it must go; the gateway
// wraps both in UDP/IPv4/Ethernet.
//
// Clients are identified by their hardware address (chaddr), not by the
// client identifier (option 61) that RFC 2131 §4.2 prefers: the switch ties
// every guest to one MAC, and keying by MAC keeps a guest from holding more
// than one address by inventing identifiers. The identifier is still echoed
// (RFC 6842 §3).
type dhcpServer struct {
	s     *settings
	db    *leaseDB
	stats *Stats
	log   *slog.Logger

	mask          net.IPMask
	router, bcast net.IP
	domain        string // without the trailing dot
	search        []byte // option 119 payload (RFC 3397 §2)
	// Unix seconds of the last log record of each kind: a guest's
	// misbehaviour is logged at most once a minute, and counted always.
	exhaustedLog, declineLog, spoofLog atomic.Int64
}

func newDHCPServer(s *settings, db *leaseDB, stats *Stats) *dhcpServer {
	d := &dhcpServer{
		s:      s,
		db:     db,
		stats:  stats,
		log:    s.log,
		mask:   net.CIDRMask(s.subnet.Bits(), 32),
		router: net.IP(s.gw.AsSlice()),
		bcast:  net.IP(lastAddr(s.subnet).AsSlice()),
		domain: strings.TrimSuffix(s.domain, "."),
	}
	d.search = (&rfc1035label.Labels{Labels: []string{d.domain}}).ToBytes()
	return d
}

// dhcpReply is an answer and its destination (RFC 2131 §4.1, "giaddr" zero:
// unicast to ciaddr if set, else broadcast if the client set the broadcast
// bit or for a NAK, else unicast to yiaddr at chaddr).
type dhcpReply struct {
	msg       *dhcpv4.DHCPv4
	dst       netip.Addr // IPv4 destination (255.255.255.255 for broadcast)
	dstMAC    [6]byte
	broadcast bool
}

var broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// handle runs one client message from Ethernet source srcMAC. ok is false
// when no answer is due (RELEASE, DECLINE, ignored and invalid messages).
func (d *dhcpServer) handle(req *dhcpv4.DHCPv4, srcMAC [6]byte) (r dhcpReply, ok bool) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		d.stats.drop(DropDHCPMalformed)
		return r, false
	}
	var mac [6]byte
	copy(mac[:], req.ClientHWAddr)
	if mac != srcMAC || mac[0]&1 != 0 || mac == [6]byte{} {
		// A guest asking for another MAC's lease could exhaust the pool;
		// the switch's anti-spoofing guarantees srcMAC.
		d.stats.drop(DropDHCPSpoofed)
		d.logLimited(&d.spoofLog, "dhcp message with a chaddr that is not its Ethernet source, dropped",
			"src", net.HardwareAddr(srcMAC[:]), "chaddr", req.ClientHWAddr)
		return r, false
	}
	if !isZero4(req.GatewayIPAddr) {
		// Relayed messages cannot reach a gateway on the guests' own link.
		d.stats.drop(DropDHCPIgnored)
		return r, false
	}
	now := d.s.clock()
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		d.stats.inc(DHCPDiscovers)
		return d.discover(req, mac, now)
	case dhcpv4.MessageTypeRequest:
		d.stats.inc(DHCPRequests)
		return d.request(req, mac, now)
	case dhcpv4.MessageTypeRelease:
		d.stats.inc(DHCPReleases)
		if a, ok := ipv4(req.ClientIPAddr); !ok || !d.db.release(mac, a, now) {
			d.stats.drop(DropDHCPIgnored)
		}
		return r, false
	case dhcpv4.MessageTypeDecline:
		d.stats.inc(DHCPDeclines)
		a, ok := ipv4(req.RequestedIPAddress())
		if !ok || !d.db.decline(mac, a, now) {
			d.stats.drop(DropDHCPIgnored)
			return r, false
		}
		d.logLimited(&d.declineLog, "dhcp address declined by client, quarantined", "mac", net.HardwareAddr(mac[:]), "addr", a, "for", declineHold)
		return r, false
	case dhcpv4.MessageTypeInform:
		d.stats.inc(DHCPInforms)
		return d.inform(req, mac)
	default:
		d.stats.drop(DropDHCPMalformed)
		return r, false
	}
}

// discover answers DHCPDISCOVER with DHCPOFFER (RFC 2131 §4.3.1), or
// nothing when the pool is exhausted (§4.3.1 lets a server stay silent).
func (d *dhcpServer) discover(req *dhcpv4.DHCPv4, mac [6]byte, now time.Time) (dhcpReply, bool) {
	want, _ := ipv4(req.RequestedIPAddress())
	addr, err := d.db.offer(mac, want, sanitizeHostname(req.HostName()), now)
	if err != nil {
		d.exhausted(mac)
		return dhcpReply{}, false
	}
	d.stats.inc(DHCPOffers)
	return d.lease(req, dhcpv4.MessageTypeOffer, addr, mac), true
}

// request answers DHCPREQUEST (RFC 2131 §4.3.2) in its four client states:
//   - SELECTING: server identifier set. Another server's: the client
//     declined our offer, stay silent. Ours: bind the requested address.
//   - INIT-REBOOT: requested address, no ciaddr. Bind it, NAK when it is on
//     the wrong network or taken.
//   - RENEWING (unicast) / REBINDING (broadcast): ciaddr set. Extend it.
//
// The server is authoritative for its subnet: a client whose binding we do
// not know (the lease file was lost) keeps its address if it is free,
// instead of the silence §4.3.2 asks of non-authoritative servers, so that a
// restarted backend never makes a guest drop its address.
func (d *dhcpServer) request(req *dhcpv4.DHCPv4, mac [6]byte, now time.Time) (dhcpReply, bool) {
	sid := req.ServerIdentifier()
	if sid != nil {
		if a, ok := ipv4(sid); !ok || a != d.s.gw {
			d.db.cancelOffer(mac)
			d.stats.drop(DropDHCPIgnored)
			return dhcpReply{}, false
		}
	}
	addr, ok := ipv4(req.RequestedIPAddress())
	if !ok {
		addr, ok = ipv4(req.ClientIPAddr)
	}
	if !ok {
		d.stats.drop(DropDHCPMalformed)
		return dhcpReply{}, false
	}
	if res, ok := d.db.reservation(mac); ok && addr != res {
		// Make the client start over and learn its reserved address.
		return d.nak(req, "address reserved elsewhere for this client"), true
	}
	prev, had := d.db.lookupMAC(mac, now)
	host := sanitizeHostname(req.HostName())
	if !d.db.bind(mac, addr, host, now) {
		if d.db.assignableFree(mac, now) {
			// There are addresses; just not this one.
			return d.nak(req, "requested address not available"), true
		}
		d.exhausted(mac)
		return d.nak(req, "no address available"), true
	}
	d.stats.inc(DHCPAcks)
	// One line per binding a user cares about: a new or changed address,
	// not every renewal.
	lvl := slog.LevelDebug
	if !had || prev != addr {
		lvl = slog.LevelInfo
	}
	d.s.log.Log(context.Background(), lvl, "dhcp lease given", "mac", net.HardwareAddr(mac[:]).String(),
		"addr", addr, "hostname", host, "lease_time", d.s.leaseTime)
	return d.lease(req, dhcpv4.MessageTypeAck, addr, mac), true
}

// inform answers DHCPINFORM (RFC 2131 §4.3.5): configuration only, no
// lease time, no yiaddr, unicast to ciaddr.
func (d *dhcpServer) inform(req *dhcpv4.DHCPv4, mac [6]byte) (dhcpReply, bool) {
	ci, ok := ipv4(req.ClientIPAddr)
	if !ok || !d.s.subnet.Contains(ci) {
		d.stats.drop(DropDHCPIgnored)
		return dhcpReply{}, false
	}
	m := d.base(req, dhcpv4.MessageTypeAck)
	m.ClientIPAddr = net.IP(ci.AsSlice())
	d.config(m)
	d.stats.inc(DHCPAcks)
	return dhcpReply{msg: m, dst: ci, dstMAC: mac}, true
}

// lease builds an OFFER or ACK of addr (RFC 2131 §4.3.1 Table 3).
func (d *dhcpServer) lease(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType, addr netip.Addr, mac [6]byte) dhcpReply {
	m := d.base(req, typ)
	m.YourIPAddr = net.IP(addr.AsSlice())
	lt := d.s.leaseTime
	m.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
	m.UpdateOption(dhcpv4.OptRenewTimeValue(lt / 2))         // T1, RFC 2131 §4.4.5
	m.UpdateOption(dhcpv4.OptRebindingTimeValue(lt * 7 / 8)) // T2
	d.config(m)
	r := dhcpReply{msg: m, dst: addr, dstMAC: mac}
	if ci, ok := ipv4(req.ClientIPAddr); ok {
		r.dst = ci
		m.ClientIPAddr = net.IP(ci.AsSlice())
	} else if req.IsBroadcast() {
		r.dst, r.dstMAC, r.broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255}), broadcastMAC, true
	}
	return r
}

// nak builds a DHCPNAK, always broadcast (RFC 2131 §4.1: with giaddr zero
// "the server broadcasts any DHCPNAK messages to 0xffffffff").
func (d *dhcpServer) nak(req *dhcpv4.DHCPv4, why string) dhcpReply {
	m := d.base(req, dhcpv4.MessageTypeNak)
	m.UpdateOption(dhcpv4.OptMessage(why))
	d.stats.inc(DHCPNaks)
	return dhcpReply{msg: m, dst: netip.AddrFrom4([4]byte{255, 255, 255, 255}), dstMAC: broadcastMAC, broadcast: true}
}

// base is a BOOTREPLY for req with the message type and server identifier
// set; the client identifier is echoed (RFC 6842 §3).
func (d *dhcpServer) base(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	m := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       dhcpv4.Options{},
	}
	m.UpdateOption(dhcpv4.OptMessageType(typ))
	m.UpdateOption(dhcpv4.OptServerIdentifier(d.router))
	// Identifiers longer than RFC 4361's DUID form (128 bytes) are not
	// echoed: with them the reply could outgrow the 548-byte message every
	// client must accept (RFC 2131 §2).
	if id := req.GetOneOption(dhcpv4.OptionClientIdentifier); len(id) > 0 && len(id) <= 128 {
		m.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientIdentifier, id))
	}
	return m
}

// config adds the network configuration options. They are sent whether or
// not the client listed them in its parameter request list (RFC 2131
// §4.3.1 allows it; busybox udhcpc, for one, asks for MTU and domain search
// only when told to), and all of them fit the 576-byte minimum message size.
func (d *dhcpServer) config(m *dhcpv4.DHCPv4) {
	m.UpdateOption(dhcpv4.OptSubnetMask(d.mask))                                                                      // RFC 2132 §3.3
	m.UpdateOption(dhcpv4.OptRouter(d.router))                                                                        // §3.5
	m.UpdateOption(dhcpv4.OptDNS(d.router))                                                                           // §3.8
	m.UpdateOption(dhcpv4.OptDomainName(d.domain))                                                                    // §3.17
	m.UpdateOption(dhcpv4.OptBroadcastAddress(d.bcast))                                                               // §5.3
	m.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, binary.BigEndian.AppendUint16(nil, uint16(d.s.mtu)))) // §5.1
	m.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionDNSDomainSearchList, d.search))                                     // RFC 3397
}

// exhausted counts and logs (at most once a minute) a client the pool had
// no address for.
func (d *dhcpServer) exhausted(mac [6]byte) {
	d.stats.inc(DHCPPoolExhausted)
	d.logLimited(&d.exhaustedLog, "dhcp pool exhausted", "mac", net.HardwareAddr(mac[:]),
		"pool", d.s.poolStart.String()+"-"+d.s.poolEnd.String())
}

// logLimited writes a warning unless last says one was written less than a
// minute ago (by the gateway's clock).
func (d *dhcpServer) logLimited(last *atomic.Int64, msg string, args ...any) {
	sec := d.s.clock().Unix()
	prev := last.Load()
	if (prev == 0 || sec-prev >= 60) && last.CompareAndSwap(prev, sec) {
		d.log.Warn(msg, args...)
	}
}

// assignableFree reports whether some address could still be offered to
// mac (used to tell "this address is taken" from "the pool is full").
func (db *leaseDB) assignableFree(mac [6]byte, now time.Time) bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	cursor := db.cursor
	_, err := db.choose(mac, netip.Addr{}, now)
	db.cursor = cursor
	return err == nil
}

// ipv4 converts a DHCP address field; the zero address and nil are "not
// set".
func ipv4(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	if !a.Is4() || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a, true
}

func isZero4(ip net.IP) bool {
	_, ok := ipv4(ip)
	return !ok
}
