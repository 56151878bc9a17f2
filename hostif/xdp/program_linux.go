package xdp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// ProgramOptions configures LoadProgram.
type ProgramOptions struct {
	// Addr is the NIC's IPv4 address: the NAT address.
	Addr netip.Addr
	// PortMin and PortMax are the NAT's port range (inclusive): TCP and UDP
	// destination ports and ICMP echo identifiers redirected.
	PortMin, PortMax uint16
	// Queues is the number of the NIC's receive queues (XSKMAP entries).
	// Default 1.
	Queues int
}

// Program is the XDP program loaded into the kernel, with its XSKMAP; it
// is not attached to any interface until Attach.
type Program struct {
	objs arcnetObjects
}

// LoadProgram loads the XDP program for opt (its constants set, its
// XSKMAP sized to opt.Queues). A kernel without BPF, BTF or the XSKMAP
// gives an error wrapping ErrNotSupported.
func LoadProgram(opt ProgramOptions) (*Program, error) {
	if !opt.Addr.Is4() {
		return nil, fmt.Errorf("xdp: NAT address %v: want IPv4", opt.Addr)
	}
	if opt.PortMin == 0 || opt.PortMin > opt.PortMax {
		return nil, fmt.Errorf("xdp: port range %d-%d: want 1 <= min <= max", opt.PortMin, opt.PortMax)
	}
	if opt.Queues == 0 {
		opt.Queues = 1
	}
	if opt.Queues < 0 || opt.Queues > maxQueues {
		return nil, fmt.Errorf("xdp: %d queues: want 1..%d", opt.Queues, maxQueues)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones
	// to the memory cgroup, where this is a no-op.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("xdp: raising RLIMIT_MEMLOCK: %w", err)
	}
	spec, err := loadArcnet()
	if err != nil {
		return nil, err
	}
	a := opt.Addr.As4()
	// nat_addr is compared with the header's bytes as a native-endian
	// load: store the address bytes in that same order.
	vars := []struct {
		name string
		v    any
	}{
		{arcnetVarNatAddr, nativeU32(a)},
		{arcnetVarPortMin, opt.PortMin},
		{arcnetVarPortMax, opt.PortMax},
	}
	for _, v := range vars {
		if err := spec.Variables[v.name].Set(v.v); err != nil {
			return nil, fmt.Errorf("xdp: setting %s: %w", v.name, err)
		}
	}
	spec.Maps[arcnetMapXsks].MaxEntries = uint32(opt.Queues)
	p := &Program{}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		return nil, loadError(err)
	}
	return p, nil
}

// maxQueues bounds the XSKMAP (and the sockets vhost-arcnet opens).
const maxQueues = 256

// loadError says why the program did not load, in words a user can act on.
func loadError(err error) error {
	switch {
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("xdp: the kernel lacks a feature the XDP program needs (BPF, BTF or XSKMAP; Linux 5.10 or later): %w", err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("xdp: loading the XDP program needs root (CAP_BPF and CAP_NET_ADMIN): %w", err)
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("xdp: the kernel's verifier refused the XDP program: %+v", ve)
	}
	return fmt.Errorf("xdp: loading the XDP program: %w", err)
}

// SetSocket makes the socket fd receive what the program redirects on
// receive queue q.
func (p *Program) SetSocket(q int, fd int) error {
	if err := p.objs.Xsks.Put(uint32(q), uint32(fd)); err != nil {
		return fmt.Errorf("xdp: XSKMAP entry for queue %d: %w", q, err)
	}
	return nil
}

// ClearSocket removes the socket of receive queue q: the program drops
// what it would redirect there.
func (p *Program) ClearSocket(q int) error {
	if err := p.objs.Xsks.Delete(uint32(q)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("xdp: XSKMAP entry for queue %d: %w", q, err)
	}
	return nil
}

// Run runs the program once on frame with BPF_PROG_TEST_RUN (for tests
// and the environment check) and returns its XDP action.
func (p *Program) Run(frame []byte) (Action, error) {
	// The kernel wants room for the headroom of an xdp_buff; Run copies
	// frame into its own buffer, so frame is not changed.
	ret, err := p.objs.ArcnetXdp.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		return 0, fmt.Errorf("xdp: BPF_PROG_TEST_RUN: %w", err)
	}
	return Action(ret), nil
}

// Attach attaches the program to the interface ifindex through a BPF link
// (the program is detached when the link is closed, or when the process
// ends: nothing is left behind by a crash). It tries native mode first and
// falls back to generic mode when the driver has no XDP support.
func (p *Program) Attach(ifindex int) (link.Link, Mode, error) {
	l, err := link.AttachXDP(link.XDPOptions{Program: p.objs.ArcnetXdp, Interface: ifindex, Flags: link.XDPDriverMode})
	if err == nil {
		return l, ModeNative, nil
	}
	nerr := err
	l, err = link.AttachXDP(link.XDPOptions{Program: p.objs.ArcnetXdp, Interface: ifindex, Flags: link.XDPGenericMode})
	if err != nil {
		return nil, 0, fmt.Errorf("xdp: attaching the XDP program: native mode: %v; generic mode: %w", nerr, err)
	}
	return l, ModeGeneric, nil
}

// Close unloads the program and its map (an attached link keeps the
// program alive until it is closed too).
func (p *Program) Close() error { return p.objs.Close() }
