package hostif

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ForwardSyntax is the syntax of a port forward, as --forward takes it.
const ForwardSyntax = "tcp|udp:[HOSTADDR:]HOSTPORT:GUEST:GUESTPORT"

// DefaultForwardHostAddr is the host address a forward listens on when its
// spec names none: loopback, so that only the host's own processes reach
// the guest.
var DefaultForwardHostAddr = netip.MustParseAddr("127.0.0.1")

// ErrForwardSyntax is wrapped by every ParseForward error.
var ErrForwardSyntax = errors.New("syntax is " + ForwardSyntax)

// ForwardSpec is one port forward: host processes that connect to
// HostAddr:HostPort (TCP) or send to it (UDP) reach the guest's GuestPort.
type ForwardSpec struct {
	// Proto is "tcp" or "udp".
	Proto string
	// HostAddr is the host address to listen on: an IPv4 address, or an
	// IPv6 address (written in brackets). ParseForward sets
	// DefaultForwardHostAddr when the spec has none.
	HostAddr netip.Addr
	// HostPort is the host port to listen on, 1..65535.
	HostPort uint16
	// Guest is the guest: an IPv4 address in dotted-decimal form, or a
	// hostname (a DHCP client's hostname or a reservation's name, lower
	// case), resolved each time a connection arrives.
	Guest string
	// GuestPort is the guest's port, 1..65535.
	GuestPort uint16
}

// ParseForward parses a port forward, tcp|udp:[HOSTADDR:]HOSTPORT:GUEST:GUESTPORT:
//
//	tcp:8080:192.168.127.10:80        127.0.0.1:8080 -> 192.168.127.10 port 80
//	tcp:0.0.0.0:2222:web:22           every host address, port 2222 -> guest "web" port 22
//	udp:[::1]:5353:192.168.127.10:53  IPv6 loopback, UDP
//
// HOSTADDR is an IPv4 address or an IPv6 address in brackets (default
// 127.0.0.1); GUEST is an IPv4 address or a hostname (letters, digits,
// '-' and dots, labels of 1..63 characters that neither start nor end with
// '-', at most 253 characters, the last label not all digits). Errors name
// the part that is wrong and wrap ErrForwardSyntax.
func ParseForward(s string) (ForwardSpec, error) {
	bad := func(format string, args ...any) (ForwardSpec, error) {
		return ForwardSpec{}, fmt.Errorf("forward %q: %s: %w", s, fmt.Sprintf(format, args...), ErrForwardSyntax)
	}
	proto, rest, ok := strings.Cut(s, ":")
	if !ok {
		return bad("no ':' after the protocol")
	}
	if proto != "tcp" && proto != "udp" {
		return bad("protocol %q: want tcp or udp", proto)
	}
	spec := ForwardSpec{Proto: proto, HostAddr: DefaultForwardHostAddr}

	var parts []string
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return bad("HOSTADDR %q: no closing ']'", rest)
		}
		a, err := netip.ParseAddr(rest[1:end])
		if err != nil || !a.Is6() || a.Is4In6() {
			return bad("HOSTADDR %q: want an IPv6 address in brackets, e.g. [::1]", rest[:end+1])
		}
		if a.Zone() != "" {
			return bad("HOSTADDR %q: IPv6 zones are not supported", rest[:end+1])
		}
		after, ok := strings.CutPrefix(rest[end+1:], ":")
		if !ok {
			return bad("want ':' after HOSTADDR %q", rest[:end+1])
		}
		spec.HostAddr = a
		parts = strings.Split(after, ":")
		if len(parts) != 3 {
			return bad("want HOSTPORT:GUEST:GUESTPORT after HOSTADDR, got %q", after)
		}
	} else {
		parts = strings.Split(rest, ":")
		switch len(parts) {
		case 3:
		case 4:
			a, err := netip.ParseAddr(parts[0])
			if err != nil || !a.Is4() {
				return bad("HOSTADDR %q: want an IPv4 address, or an IPv6 address in brackets", parts[0])
			}
			spec.HostAddr = a
			parts = parts[1:]
		default:
			if len(parts) > 4 && !strings.ContainsAny(rest, "[]") {
				return bad("%d ':'-separated parts after the protocol, want 3 or 4 (an IPv6 HOSTADDR goes in brackets, e.g. [::1])", len(parts))
			}
			return bad("%d ':'-separated parts after the protocol, want 3 or 4", len(parts))
		}
	}

	var err error
	if spec.HostPort, err = parsePort(parts[0]); err != nil {
		return bad("HOSTPORT %q: %v", parts[0], err)
	}
	if spec.Guest, err = parseGuest(parts[1]); err != nil {
		return bad("GUEST %q: %v", parts[1], err)
	}
	if spec.GuestPort, err = parsePort(parts[2]); err != nil {
		return bad("GUESTPORT %q: %v", parts[2], err)
	}
	return spec, nil
}

// parsePort parses a decimal port, 1..65535.
func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, errors.New("want a port 1..65535")
	}
	return uint16(p), nil
}

// parseGuest checks a GUEST: an IPv4 address (returned in canonical form)
// or a hostname (returned in lower case).
func parseGuest(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if !a.Is4() {
			return "", errors.New("want an IPv4 address or a hostname (guests have IPv4 addresses)")
		}
		return a.String(), nil
	}
	if !IsHostname(s) {
		return "", errors.New("want an IPv4 address or a hostname (letters, digits, '-' and dots)")
	}
	return strings.ToLower(s), nil
}

// IsHostname reports whether s is a DNS-style hostname as a forward's GUEST
// may be (RFC 1123 §2.1): dot-separated labels of 1..63 letters, digits and
// '-', not starting or ending with '-', at most 253 characters in all, the
// last label not all digits (so that a mistyped IPv4 address is not taken
// for a name).
func IsHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	last := s[strings.LastIndexByte(s, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}

// GuestAddr returns the guest's address and true when Guest is an IPv4
// address, false when it is a hostname.
func (s ForwardSpec) GuestAddr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(s.Guest)
	return a, err == nil
}

// HostAddrPort is the host address and port the forward listens on
// (DefaultForwardHostAddr when HostAddr is the zero Addr).
func (s ForwardSpec) HostAddrPort() netip.AddrPort {
	a := s.HostAddr
	if !a.IsValid() {
		a = DefaultForwardHostAddr
	}
	return netip.AddrPortFrom(a, s.HostPort)
}

// String returns the spec in ParseForward's syntax, with HOSTADDR always
// written, e.g. "tcp:127.0.0.1:8080:web:80".
func (s ForwardSpec) String() string {
	var b strings.Builder
	b.WriteString(s.Proto)
	b.WriteByte(':')
	b.WriteString(s.HostAddrPort().String()) // brackets an IPv6 address
	b.WriteByte(':')
	b.WriteString(s.Guest)
	b.WriteByte(':')
	b.WriteString(strconv.Itoa(int(s.GuestPort)))
	return b.String()
}
