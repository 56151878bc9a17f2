//go:build linux

package hostif

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ipForwardPath is the IPv4 forwarding switch of the calling thread's network
// namespace (Documentation/networking/ip-sysctl.rst, "ip_forward").
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// Masquerade is vhost-arcnet's own nftables table (family ip) that
// masquerades packets from the link network going out of one interface,
// together with net.ipv4.ip_forward switched on. Close removes both.
type Masquerade struct {
	log     *slog.Logger
	conn    *nftables.Conn
	table   *nftables.Table
	forward *os.File // ipForwardPath, opened in Setup's network namespace
	prevFwd []byte   // ip_forward before Setup, nil when it was already 1

	mu     sync.Mutex
	closed bool
}

// SetupMasquerade creates the table
//
//	table ip NAME {
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			oifname OUT ip saddr SOURCE counter masquerade
//		}
//	}
//
// through nftables' netlink API (not by running nft), replacing in the same
// transaction a table of that name a crashed run left behind, and sets
// net.ipv4.ip_forward to 1. On error nothing is left behind.
func SetupMasquerade(opt MasqueradeOptions) (*Masquerade, error) {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	name := opt.Table
	if name == "" {
		name = DefaultMasqueradeTable
	}
	if len(name) >= unix.NFT_TABLE_MAXNAMELEN {
		return nil, fmt.Errorf("nftables table name %q is too long: use at most %d characters", name, unix.NFT_TABLE_MAXNAMELEN-1)
	}
	src := opt.Source
	if !src.IsValid() || !src.Addr().Is4() {
		return nil, fmt.Errorf("masquerade source %v is not an IPv4 prefix", src)
	}
	src = src.Masked()
	out := opt.OutIface
	if out == "" {
		var err error
		if out, err = defaultRouteIface(); err != nil {
			return nil, err
		}
	}
	if len(out) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("%q is not a valid interface name", out)
	}
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, nftError("opening an nftables connection", err)
	}
	m := &Masquerade{log: log.With("nft_table", name), conn: conn}
	if err := m.setup(name, src, out); err != nil {
		conn.CloseLasting()
		return nil, err
	}
	if err := m.enableForwarding(); err != nil {
		m.conn.DelTable(m.table)
		m.conn.Flush()
		conn.CloseLasting()
		return nil, err
	}
	m.log.Info("masquerading", "source", src, "out", out, "ip_forward_switched_on", m.prevFwd != nil)
	return m, nil
}

// setup replaces a stale table and adds the new one, in one transaction.
func (m *Masquerade) setup(name string, src netip.Prefix, out string) error {
	stale, err := m.conn.ListTableOfFamily(name, nftables.TableFamilyIPv4)
	switch {
	case err == nil && stale != nil:
		m.log.Warn("replacing a stale nftables table (from a run that did not clean up?)")
		m.conn.DelTable(stale)
	case err != nil && !errors.Is(err, unix.ENOENT):
		return nftError("looking for a stale nftables table "+name, err)
	}
	m.table = m.conn.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: name})
	policy := nftables.ChainPolicyAccept
	chain := m.conn.AddChain(&nftables.Chain{
		Name:     "postrouting",
		Table:    m.table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
		Policy:   &policy,
	})
	ifname := make([]byte, unix.IFNAMSIZ) // as nft compares oifname: NUL-padded
	copy(ifname, out)
	netAddr := src.Addr().As4()
	mask := maskBytes(src.Bits())
	m.conn.AddRule(&nftables.Rule{
		Table: m.table,
		Chain: chain,
		Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname},
			// ip saddr: bytes 12..15 of the IPv4 header (RFC 791 §3.1).
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: netAddr[:]},
			&expr.Counter{},
			&expr.Masq{},
		},
	})
	if err := m.conn.Flush(); err != nil {
		return nftError("creating nftables table "+name, err)
	}
	return nil
}

// maskBytes returns the IPv4 netmask of a prefix of bits bits.
func maskBytes(bits int) [4]byte {
	v := ^uint32(0) << (32 - bits)
	if bits == 0 {
		v = 0
	}
	return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// nftError words an nftables failure so that a user can act on it.
func nftError(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%s: masquerading needs CAP_NET_ADMIN: run as root, or leave out --masquerade and set up NAT for the link network on the host yourself", what)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT):
		return fmt.Errorf("%s: %w: the kernel lacks nftables NAT (nf_tables, nft_masq): load it (modprobe nft_masq) or leave out --masquerade", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// defaultRouteIface returns the interface of the host's IPv4 default route.
func defaultRouteIface() (string, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", fmt.Errorf("listing the host's IPv4 routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		idx := r.LinkIndex
		if idx == 0 && len(r.MultiPath) > 0 {
			idx = r.MultiPath[0].LinkIndex
		}
		if idx == 0 {
			continue
		}
		link, err := netlink.LinkByIndex(idx)
		if err != nil {
			return "", fmt.Errorf("the interface of the default route: %w", err)
		}
		return link.Attrs().Name, nil
	}
	return "", errors.New("the host has no IPv4 default route to masquerade out of: add one, or name the outgoing interface")
}

// enableForwarding sets net.ipv4.ip_forward to 1 and remembers its value.
func (m *Masquerade) enableForwarding() error {
	f, err := os.OpenFile(ipForwardPath, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w: masquerading needs it writable (run as root)", ipForwardPath, err)
	}
	buf := make([]byte, 16)
	n, err := f.ReadAt(buf, 0)
	if n == 0 && err != nil {
		f.Close()
		return fmt.Errorf("reading %s: %w", ipForwardPath, err)
	}
	prev := bytes.TrimSpace(buf[:n])
	if string(prev) != "1" {
		if _, err := f.WriteAt([]byte("1\n"), 0); err != nil {
			f.Close()
			return fmt.Errorf("enabling IPv4 forwarding (%s): %w", ipForwardPath, err)
		}
		m.prevFwd = append(prev, '\n')
	}
	m.forward = f
	return nil
}

// Close deletes the table and restores net.ipv4.ip_forward to its value
// before SetupMasquerade. It is idempotent.
func (m *Masquerade) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	m.conn.DelTable(m.table)
	if err := m.conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, nftError("deleting nftables table "+m.table.Name, err))
	}
	if err := m.conn.CloseLasting(); err != nil {
		errs = append(errs, fmt.Errorf("closing the nftables connection: %w", err))
	}
	if m.prevFwd != nil {
		if _, err := m.forward.WriteAt(m.prevFwd, 0); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s: %w", ipForwardPath, err))
		}
	}
	if err := m.forward.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
