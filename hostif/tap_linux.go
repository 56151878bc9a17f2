//go:build linux

package hostif

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// tunDevice is the clone device of the TUN/TAP driver
// (Documentation/networking/tuntap.rst §3.2); a variable for tests.
var tunDevice = "/dev/net/tun"

// TUNSETOFFLOAD flags, include/uapi/linux/if_tun.h: the offloads the reader
// of the TAP takes, that is, the GSO and checksum-partial frames the kernel
// may hand to it.
const (
	tunFCsum   = 0x01 // TUN_F_CSUM: partial checksums
	tunFTSO4   = 0x02 // TUN_F_TSO4
	tunFTSO6   = 0x04 // TUN_F_TSO6
	tunFTSOECN = 0x08 // TUN_F_TSO_ECN
	tunFUSO4   = 0x20 // TUN_F_USO4 (Linux 6.2)
	tunFUSO6   = 0x40 // TUN_F_USO6 (Linux 6.2)
)

// tapOffloads is what OpenTAP asks TUNSETOFFLOAD for: what the datapath
// can carry to every guest (passed on, or segmented by the switch).
// tapOffloadsUSO adds USO (TAPOptions.USO); kernels before 6.2 refuse the
// USO bits with EINVAL and get the rest.
const (
	tapOffloads    = tunFCsum | tunFTSO4 | tunFTSO6 | tunFTSOECN
	tapOffloadsUSO = tapOffloads | tunFUSO4 | tunFUSO6
)

// readBufSize is the size of one read buffer: the virtio-net header, the
// largest IPv4 packet a GSO frame can carry and its Ethernet header.
const readBufSize = virtio.NetHdrSize + 65535 + header.EthernetMinSize

// maxIOV is UIO_MAXIOV, the most segments one writev takes.
const maxIOV = 1024

// MTU bounds of a TAP device: the IPv4 minimum (RFC 791 §3.1) and the tun
// driver's max_mtu (MAX_MTU - ETH_HLEN, drivers/net/tun.c).
const (
	minMTU = 68
	maxMTU = 65521
)

// TAP is a Linux TAP device used as the uplink: frames are read from and
// written to it with a virtio_net_hdr_v1 in front (IFF_VNET_HDR), so
// checksum-partial and GSO frames cross it unsegmented. It implements
// datapath.Port.
type TAP struct {
	log     *slog.Logger
	name    string
	ifindex int
	created bool
	host    netip.Addr
	nat     netip.Addr
	prefix  netip.Prefix
	mac     header.MAC
	mtu     int
	offload int  // the TUN_F_* bits TUNSETOFFLOAD accepted
	uso     bool // TAPOptions.USO
	queues  []*tapQueue
	stats   datapath.Stats
	peer    atomic.Pointer[datapath.Port]
	inPlace atomic.Pointer[datapath.InPlaceTarget] // SetInPlace (tap_inplace_linux.go)
	// inPlaceFrames counts frames read straight into a guest's buffers.
	inPlaceFrames atomic.Uint64
	writeErr      atomic.Bool // a write error was logged
	readErr       atomic.Bool // a malformed frame from the kernel was logged

	mu      sync.Mutex // guards started and closed
	started bool
	closed  bool
	wg      sync.WaitGroup // the readers
}

// tapQueue is one file descriptor of the TAP: one queue of a multi-queue
// device.
type tapQueue struct {
	tap  *TAP
	idx  uint16
	fd   int
	file *os.File // fd, registered with Go's poller
	rc   syscall.RawConn

	// The write side, guarded by wmu.
	wmu    sync.Mutex
	closed bool
	hdr    [virtio.NetHdrSize]byte
	iov    []unix.Iovec // iov[0] points at hdr

	// The read side, used by the queue's reader goroutine only.
	bufs   [datapath.MaxBatch][]byte
	lens   [datapath.MaxBatch]int
	n      int   // frames read in the current batch
	rerr   error // the error that ended the current batch
	readFn func(fd uintptr) bool
	frames [datapath.MaxBatch]datapath.Frame
	segs   [datapath.MaxBatch][1][]byte

	// Reading in place (tap_inplace_linux.go), by the reader only.
	big    bool // the last frame read was large: try the next in place
	res    datapath.Reservation
	target datapath.InPlaceTarget // held from readInPlace to deliverInPlace
	gp     *datapath.GuestPort
	lazyGP *datapath.GuestPort // owes calls for lazyN frames (flushCalls)
	lazyN  int
	rn     int // bytes the in-place read returned
	rhdr   [virtio.NetHdrSize]byte
	riov   []unix.Iovec
	isegs  [][]byte
}

// OpenTAP creates a TAP device and configures its link network, or attaches
// to an existing one (opt.Existing). On error nothing is left behind: a
// device it created is gone, and every file descriptor closed.
func OpenTAP(opt TAPOptions) (*TAP, error) {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	queues := opt.Queues
	if queues == 0 {
		queues = 1
	}
	if queues < 1 || queues > MaxQueues {
		return nil, fmt.Errorf("TAP queues must be between 1 and %d, not %d", MaxQueues, opt.Queues)
	}
	if err := checkIfName(opt.Name, opt.Existing); err != nil {
		return nil, err
	}
	t := &TAP{log: log, uso: opt.USO}
	var err error
	if opt.Existing {
		err = t.attach(opt.Name, queues)
	} else {
		err = t.create(opt, queues)
	}
	if err != nil {
		t.release()
		return nil, err
	}
	t.log = log.With("tap", t.name)
	t.log.Info("TAP ready", "existing", opt.Existing, "queues", queues, "mtu", t.mtu,
		"link_net", t.prefix, "host", t.host, "nat", t.nat, "offloads", fmt.Sprintf("%#x", t.offload))
	return t, nil
}

// checkIfName checks an interface name the way the kernel does
// (dev_valid_name, net/core/dev.c), so that a bad name gets an error of its
// own rather than EINVAL from TUNSETIFF.
func checkIfName(name string, existing bool) error {
	if name == "" {
		if existing {
			return errors.New("attaching to an existing TAP needs its name: use --uplink tap:NAME")
		}
		return nil
	}
	if len(name) >= unix.IFNAMSIZ || name == "." || name == ".." {
		return fmt.Errorf("%q is not a valid interface name: use at most %d characters, no '/', ':' or spaces", name, unix.IFNAMSIZ-1)
	}
	for _, c := range []byte(name) {
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f {
			return fmt.Errorf("%q is not a valid interface name: use at most %d characters, no '/', ':' or spaces", name, unix.IFNAMSIZ-1)
		}
	}
	return nil
}

// capNetAdminMsg is the error for a TAP vhost-arcnet may not create.
const capNetAdminMsg = "creating a TAP needs CAP_NET_ADMIN: run as root, or create a persistent TAP owned by your user (ip tuntap add NAME mode tap user $USER vnet_hdr) and use --uplink tap:NAME"

// create makes a new TAP device with queues queues and gives it the host's
// end of the link network.
func (t *TAP) create(opt TAPOptions, queues int) error {
	t.mtu = opt.MTU
	if t.mtu == 0 {
		t.mtu = 1500
	}
	if t.mtu < minMTU || t.mtu > maxMTU {
		return fmt.Errorf("TAP MTU %d is out of range: use %d..%d", t.mtu, minMTU, maxMTU)
	}
	t.prefix = opt.LinkNet
	if !t.prefix.IsValid() {
		t.prefix = DefaultLinkNet
	}
	t.prefix = t.prefix.Masked()
	var err error
	if t.host, t.nat, err = linkNetAddrs(t.prefix); err != nil {
		return err
	}
	if err := checkRoutes(t.prefix); err != nil {
		return err
	}
	name := opt.Name
	if name != "" {
		if _, err := netlink.LinkByName(name); err == nil {
			return fmt.Errorf("a network device named %s already exists: choose another name, or use --uplink tap:%s to attach to a TAP you made", name, name)
		}
	} else {
		name = "arcnet%d"
	}
	// Open the first queue with IFF_TUN_EXCL: TUNSETIFF fails with EBUSY
	// instead of attaching to a device someone made in the meantime
	// (drivers/net/tun.c, tun_set_iff), which Close would then delete.
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if queues > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	fd, kname, err := openQueue(name, flags|unix.IFF_TUN_EXCL)
	if err != nil {
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return errors.New(capNetAdminMsg)
		case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EEXIST):
			return fmt.Errorf("a network device named %s already exists: choose another name, or use --uplink tap:%s to attach to a TAP you made", opt.Name, opt.Name)
		}
		return err
	}
	t.name, t.created = kname, true
	if err := t.addQueue(fd); err != nil {
		return err
	}
	for i := 1; i < queues; i++ {
		fd, _, err := openQueue(t.name, flags)
		if err != nil {
			return fmt.Errorf("TAP %s queue %d: %w", t.name, i, err)
		}
		if err := t.addQueue(fd); err != nil {
			return err
		}
	}
	if err := t.setOffloads(); err != nil {
		return err
	}
	link, err := netlink.LinkByName(t.name)
	if err != nil {
		return fmt.Errorf("TAP %s: %w", t.name, err)
	}
	t.ifindex = link.Attrs().Index
	// The link network is IPv4 only: without IPv6 on the TAP, the kernel
	// sends no router solicitations or MLD reports down it. Best effort:
	// the file is missing when IPv6 is disabled altogether.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+t.name+"/disable_ipv6", []byte("1"), 0)
	if err := netlink.LinkSetMTU(link, t.mtu); err != nil {
		return fmt.Errorf("setting the MTU of TAP %s to %d: %w", t.name, t.mtu, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: t.host.AsSlice(), Mask: net.CIDRMask(t.prefix.Bits(), 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("adding %v/%d to TAP %s: %w", t.host, t.prefix.Bits(), t.name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting TAP %s up: %w", t.name, err)
	}
	return t.readMAC()
}

// checkRoutes returns an error when the link network p overlaps a route of
// the host's main IPv4 table: the TAP's own route would shadow it, or be
// shadowed.
func checkRoutes(p netip.Prefix) error {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing the host's IPv4 routes: %w", err)
	}
	infos := make([]routeInfo, 0, len(routes))
	idx := make([]int, 0, len(routes))
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		bits, _ := r.Dst.Mask.Size()
		infos = append(infos, routeInfo{Dst: netip.PrefixFrom(ip.Unmap(), bits)})
		idx = append(idx, r.LinkIndex)
	}
	for i := range infos {
		if r, ok := overlappingRoute(p, infos[i:i+1]); ok {
			dev := "?"
			if l, err := netlink.LinkByIndex(idx[i]); err == nil {
				dev = l.Attrs().Name
			}
			return fmt.Errorf("link network %v overlaps the host's route %v dev %s: choose another with --uplink-net", p, r.Dst, dev)
		}
	}
	return nil
}

// attach opens an existing TAP named name with queues queues; its IPv4
// address tells the link network.
func (t *TAP) attach(name string, queues int) error {
	t.name = name
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return fmt.Errorf("there is no network device named %s: create it with ip tuntap add %s mode tap user $USER vnet_hdr, or use --uplink tap to let vhost-arcnet create one (as root)", name, name)
		}
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	tt, ok := link.(*netlink.Tuntap)
	if !ok {
		return fmt.Errorf("%s is a %s device, not a TAP: create a TAP with ip tuntap add NAME mode tap user $USER vnet_hdr and use --uplink tap:NAME", name, link.Type())
	}
	if tt.Mode != netlink.TUNTAP_MODE_TAP {
		return fmt.Errorf("%s is a TUN (layer 3) device, not a TAP: recreate it with ip tuntap add %s mode tap user $USER vnet_hdr", name, name)
	}
	multi := tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0
	if queues > 1 && !multi {
		return fmt.Errorf("TAP %s is single-queue but %d queues were asked for: recreate it with ip tuntap add %s mode tap user $USER vnet_hdr multi_queue, or use one queue", name, queues, name)
	}
	t.ifindex = link.Attrs().Index
	t.mtu = link.Attrs().MTU
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing the addresses of TAP %s: %w", name, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("TAP %s has no IPv4 address: give it the host's end of a link network, e.g. ip addr add %v/%d dev %s", name, mustHost(DefaultLinkNet), DefaultLinkNet.Bits(), name)
	}
	ip, _ := netip.AddrFromSlice(addrs[0].IP)
	bits, _ := addrs[0].Mask.Size()
	t.host = ip.Unmap()
	t.prefix = netip.PrefixFrom(t.host, bits).Masked()
	if t.nat, err = natAddrFor(t.prefix, t.host); err != nil {
		return fmt.Errorf("TAP %s: network %v %v: give it a /30 or a larger network (ip addr add %v/%d dev %s)", name, t.prefix, err, mustHost(DefaultLinkNet), DefaultLinkNet.Bits(), name)
	}
	if len(addrs) > 1 {
		t.log.Warn("TAP has several IPv4 addresses; the first is the host's end of the link", "tap", name, "host", t.host)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if multi {
		// TUNSETIFF must repeat the device's IFF_MULTI_QUEUE, or it fails
		// with EINVAL (tun_set_iff).
		flags |= unix.IFF_MULTI_QUEUE
	}
	for i := range queues {
		fd, _, err := openQueue(name, flags)
		if err != nil {
			switch {
			case errors.Is(err, unix.EPERM):
				return fmt.Errorf("TAP %s belongs to another user: recreate it with ip tuntap add %s mode tap user $USER vnet_hdr, or run as root", name, name)
			case errors.Is(err, unix.EBUSY):
				return fmt.Errorf("TAP %s is in use by another process: stop that process, or use another TAP", name)
			case errors.Is(err, unix.EINVAL):
				return fmt.Errorf("TAP %s does not take the mode vhost-arcnet asks for (tap, no_pi, vnet_hdr): recreate it with ip tuntap add %s mode tap user $USER vnet_hdr", name, name)
			}
			return fmt.Errorf("TAP %s queue %d: %w", name, i, err)
		}
		if err := t.addQueue(fd); err != nil {
			return err
		}
	}
	// The kernel takes the IFF_VNET_HDR of each attach (TUN_FEATURES in
	// tun_set_iff), but not when further queues of a multi-queue device
	// are attached already: check what the device has now.
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(t.queues[0].fd, unix.TUNGETIFF, ifr); err != nil {
		return fmt.Errorf("TAP %s: TUNGETIFF: %w", name, err)
	}
	if ifr.Uint16()&unix.IFF_VNET_HDR == 0 {
		return fmt.Errorf("TAP %s has no vnet_hdr: recreate it with ip tuntap add %s mode tap user $USER vnet_hdr", name, name)
	}
	if err := t.setOffloads(); err != nil {
		return err
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("TAP %s is down: set it up with ip link set %s up", name, name)
		}
	}
	return t.readMAC()
}

// openQueue opens one file descriptor of the TAP name with TUNSETIFF flags
// (Documentation/networking/tuntap.rst §3.2, §3.3 for IFF_MULTI_QUEUE) and
// returns it nonblocking, with the device's name as the kernel gave it.
func openQueue(name string, flags uint16) (int, string, error) {
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
			return -1, "", fmt.Errorf("%s is missing: load the tun module (modprobe tun)", tunDevice)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return -1, "", fmt.Errorf("opening %s: %w: make it usable by your user (chmod 0666 %s, its usual mode) or run as root", tunDevice, err, tunDevice)
		}
		return -1, "", fmt.Errorf("opening %s: %w", tunDevice, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("interface name %q: %w", name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	return fd, ifr.Name(), nil
}

// addQueue sets fd's virtio-net header size and adds it as the next queue.
// It owns fd from then on, also on error.
func (t *TAP) addQueue(fd int) error {
	// Every frame is preceded by struct virtio_net_hdr_v1 (virtio 1.2
	// §5.1.6), 12 bytes rather than the legacy 10 (TUNSETVNETHDRSZ,
	// include/uapi/linux/if_tun.h).
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, virtio.NetHdrSize); err != nil {
		unix.Close(fd)
		return fmt.Errorf("TAP %s: TUNSETVNETHDRSZ: %w", t.name, err)
	}
	q := &tapQueue{tap: t, idx: uint16(len(t.queues)), fd: fd}
	// The fd is nonblocking, so os.NewFile registers it with the runtime's
	// poller; its Fd method, which would make it blocking, is never called.
	q.file = os.NewFile(uintptr(fd), tunDevice+":"+t.name)
	rc, err := q.file.SyscallConn()
	if err != nil {
		q.file.Close()
		return fmt.Errorf("TAP %s: %w", t.name, err)
	}
	q.rc = rc
	q.iov = make([]unix.Iovec, 1, 16)
	q.iov[0].Base = &q.hdr[0]
	q.iov[0].SetLen(virtio.NetHdrSize)
	t.queues = append(t.queues, q)
	return nil
}

// setOffloads tells the kernel which offloads the TAP's reader takes
// (TUNSETOFFLOAD): partial checksums, TSO and, since Linux 6.2, USO.
func (t *TAP) setOffloads() error {
	fd := t.queues[0].fd
	off := tapOffloads
	if t.uso {
		off = tapOffloadsUSO
	}
	err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, off)
	if errors.Is(err, unix.EINVAL) {
		// Kernels before 6.2 know no USO and refuse unknown bits.
		off &^= tunFUSO4 | tunFUSO6
		err = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, off)
	}
	if err != nil {
		return fmt.Errorf("TAP %s: TUNSETOFFLOAD: %w", t.name, err)
	}
	t.offload = off
	return nil
}

// readMAC reads the kernel side's MAC address of the device.
func (t *TAP) readMAC() error {
	link, err := netlink.LinkByName(t.name)
	if err != nil {
		return fmt.Errorf("TAP %s: %w", t.name, err)
	}
	hw := link.Attrs().HardwareAddr
	if len(hw) != len(t.mac) {
		return fmt.Errorf("TAP %s has no Ethernet address", t.name)
	}
	copy(t.mac[:], hw)
	return nil
}

// release closes every queue, waits for the readers to stop and deletes the
// device if OpenTAP created it.
func (t *TAP) release() error {
	// Closing an os.File wakes a reader blocked in the poller (RawConn.Read
	// returns an error); the descriptor itself is closed when the last
	// reader lets go of it.
	var errs []error
	for _, q := range t.queues {
		if err := q.file.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing TAP %s queue %d: %w", t.name, q.idx, err))
		}
	}
	t.wg.Wait()
	if t.created {
		// A TAP that is not persistent goes away with its last file
		// descriptor (tun_detach); delete it should anything remain, but
		// only if it is still the device this TAP made.
		if link, err := netlink.LinkByName(t.name); err == nil && link.Attrs().Index == t.ifindex {
			if err := netlink.LinkDel(link); err != nil {
				errs = append(errs, fmt.Errorf("deleting TAP %s: %w", t.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Name returns the device's name.
func (t *TAP) Name() string { return t.name }

// Stats returns the TAP's counters: Rx counts frames read from the device,
// Tx frames written to it.
func (t *TAP) Stats() *datapath.Stats { return &t.stats }

// HostAddr returns the host's end of the link network.
func (t *TAP) HostAddr() netip.Addr { return t.host }

// NATAddr returns vhost-arcnet's address on the link network: the NAT's
// external address. Nothing on the host has it; vhost-arcnet's router
// answers ARP for it.
func (t *TAP) NATAddr() netip.Addr { return t.nat }

// Prefix returns the link network.
func (t *TAP) Prefix() netip.Prefix { return t.prefix }

// HostMAC returns the MAC address of the kernel's side of the TAP, the
// destination of frames to the host.
func (t *TAP) HostMAC() header.MAC { return t.mac }

// MTU returns the device's MTU.
func (t *TAP) MTU() int { return t.mtu }

// Queues returns the number of queues the device was opened with.
func (t *TAP) Queues() int { return len(t.queues) }

// Offloads returns the offloads TUNSETOFFLOAD accepted: the checksum-partial
// and GSO frames the kernel may hand to the TAP's reader, and, the same
// kernel code parsing both directions (virtio_net_hdr_to_skb), the ones it
// takes from Send. USO (TAPOptions.USO) has no RxOffloads field; USOAccepted
// reports it.
func (t *TAP) Offloads() datapath.RxOffloads {
	return datapath.RxOffloads{
		Csum: t.offload&tunFCsum != 0,
		TSO4: t.offload&tunFTSO4 != 0,
		TSO6: t.offload&tunFTSO6 != 0,
		ECN:  t.offload&tunFTSOECN != 0,
		// UFO is VIRTIO_NET_HDR_GSO_UDP, which the kernel takes on write
		// but never hands out; USO has no RxOffloads field yet.
	}
}

// USOAccepted reports whether the kernel hands the reader USO frames
// (TAPOptions.USO was set and the kernel took TUN_F_USO4).
func (t *TAP) USOAccepted() bool { return t.offload&tunFUSO4 != 0 }

// SetPeer sets where frames read from the TAP go; nil drops them.
func (t *TAP) SetPeer(p datapath.Port) {
	if p == nil {
		t.peer.Store(nil)
		return
	}
	t.peer.Store(&p)
}

// Send writes frames to the TAP, each with one writev of its virtio-net
// header (NumBuffers 0) and segments. All frames of a call belong to one
// queue (datapath.Port); they go to the device queue Queue modulo Queues,
// under that queue's lock, taken once per call. Frames the kernel refuses
// are counted as drops.
func (t *TAP) Send(frames []datapath.Frame) {
	if len(frames) == 0 {
		return
	}
	q := t.queues[int(frames[0].Queue)%len(t.queues)]
	q.wmu.Lock()
	if q.closed {
		q.wmu.Unlock()
		t.stats.Drop(datapath.DropNoQueue, uint64(len(frames)))
		return
	}
	var sent, bytes, noBuf, gone, bad uint64
	for i := range frames {
		f := &frames[i]
		if len(f.Segs) >= maxIOV {
			bad++
			continue
		}
		h := f.Hdr
		h.NumBuffers = 0
		h.Encode(q.hdr[:])
		iov := q.iov[:1]
		for _, s := range f.Segs {
			if len(s) == 0 {
				continue
			}
			iov = append(iov, unix.Iovec{Base: &s[0]})
			iov[len(iov)-1].SetLen(len(s))
		}
		q.iov = iov // keeps a grown array for the next frames
		for {
			_, err := writev(q.fd, iov)
			switch {
			case err == nil:
				sent++
				bytes += uint64(f.Len)
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN || err == unix.ENOBUFS || err == unix.ENOMEM:
				noBuf++
			case err == unix.EBADFD:
				// The device was deleted under the open file
				// (tun_chr_write_iter finds no tun any more).
				gone++
				if !t.writeErr.Swap(true) {
					t.log.Error("TAP went away (deleted?): frames to it are dropped", "queue", q.idx)
				}
			default:
				bad++
				if !t.writeErr.Swap(true) {
					t.log.Warn("TAP refused a frame (logged once)", "queue", q.idx, "len", f.Len,
						"gso_type", f.Hdr.GSOType, "flags", f.Hdr.Flags, "err", err)
				}
			}
			break
		}
	}
	q.wmu.Unlock()
	t.stats.TxPackets.Add(sent)
	t.stats.TxBytes.Add(bytes)
	t.stats.Drop(datapath.DropNoBuffer, noBuf)
	t.stats.Drop(datapath.DropNoQueue, gone)
	t.stats.Drop(datapath.DropMalformed, bad)
}

// Start starts one reader goroutine per queue. Frames read go to the peer
// in batches of up to datapath.MaxBatch; their bytes are valid only during
// the peer's Send. Start after Close, or a second time, does nothing.
func (t *TAP) Start() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started || t.closed {
		return
	}
	t.started = true
	for _, q := range t.queues {
		q.initReader()
		t.wg.Go(q.readLoop)
	}
}

// initReader allocates the queue's read buffers and its read function, once.
func (q *tapQueue) initReader() {
	mem := make([]byte, datapath.MaxBatch*readBufSize)
	for i := range q.bufs {
		q.bufs[i] = mem[i*readBufSize : (i+1)*readBufSize : (i+1)*readBufSize]
	}
	// The function is made once: RawConn.Read calls it again each time the
	// fd becomes readable, and a new closure per call would allocate.
	q.readFn = func(fd uintptr) bool {
		if q.big && q.n == 0 {
			switch q.readInPlace(int(fd)) {
			case inPlaceRead:
				return true
			case inPlaceAgain:
				return false
			}
		}
		for q.n < datapath.MaxBatch {
			m, err := read(int(fd), q.bufs[q.n])
			switch err {
			case nil:
				q.lens[q.n] = m
				q.n++
			case unix.EINTR:
			case unix.EAGAIN:
				// Nothing more for now: hand over what was read, or
				// let the poller wait for the fd to become readable
				// (first the calls frames read in place owe).
				if q.n == 0 {
					q.flushCalls()
				}
				return q.n > 0
			default:
				q.rerr = err
				return true
			}
		}
		return true
	}
}

// readLoop reads batches from the queue and hands them to the peer until
// the TAP is closed.
func (q *tapQueue) readLoop() {
	t := q.tap
	defer q.flushCalls() // calls owed for frames read in place
	for {
		q.n, q.rerr = 0, nil
		if err := q.rc.Read(q.readFn); err != nil {
			return // closed
		}
		if q.gp != nil {
			q.deliverInPlace()
		}
		if q.n > 0 {
			q.deliver()
		}
		if q.rerr != nil {
			if errors.Is(q.rerr, unix.EBADFD) {
				t.log.Error("TAP went away (deleted?): its queue stops", "queue", q.idx)
			} else {
				t.log.Error("reading from the TAP failed: its queue stops", "queue", q.idx, "err", q.rerr)
			}
			return
		}
	}
}

// deliver hands the q.n frames read to the peer as one batch.
func (q *tapQueue) deliver() {
	t := q.tap
	frames, bytes, bad := q.decode(q.n)
	t.stats.RxPackets.Add(uint64(q.n))
	t.stats.RxBytes.Add(bytes)
	if bad > 0 {
		t.stats.Drop(datapath.DropMalformed, bad)
		if !t.readErr.Swap(true) {
			t.log.Warn("malformed frame from the TAP dropped (logged once)", "queue", q.idx)
		}
	}
	if len(frames) == 0 {
		return
	}
	p := t.peer.Load()
	if p == nil {
		t.stats.Drop(datapath.DropNoRoute, uint64(len(frames)))
		return
	}
	(*p).Send(frames)
}

// decode turns the first n read buffers into frames: the virtio-net header
// decoded and checked, the frame bytes after it as the one segment. It
// returns the frames, the bytes read and the number of frames dropped as
// malformed.
func (q *tapQueue) decode(n int) (frames []datapath.Frame, bytes, bad uint64) {
	k := 0
	for i := range n {
		b := q.bufs[i][:q.lens[i]]
		bytes += uint64(len(b))
		if len(b) < virtio.NetHdrSize+header.EthernetMinSize {
			bad++
			continue
		}
		var h virtio.NetHdr
		h.Decode(b)
		frame := b[virtio.NetHdrSize:]
		if !validRxHdr(&h, len(frame), q.tap.offload) {
			bad++
			continue
		}
		h.NumBuffers = 0
		q.big = len(frame) >= inPlaceMin
		q.segs[k][0] = frame
		q.frames[k] = datapath.Frame{Hdr: h, Segs: q.segs[k][:], Len: len(frame), Queue: q.idx}
		k++
	}
	return q.frames[:k], bytes, bad
}

// validRxHdr reports whether the virtio-net header h of a frame of n bytes
// read from the TAP is one the rest of the datapath may use: only flags the
// kernel sets on this path, a checksum range inside the frame, and a GSO
// type among the offloads negotiated (off) with a partial checksum and a
// non-zero segment size (virtio 1.2 §5.1.6; the kernel fills it in
// virtio_net_hdr_from_skb). The kernel is trusted with lengths, not with
// what a later consumer would compute from these fields.
func validRxHdr(h *virtio.NetHdr, n, off int) bool {
	if h.Flags&^(virtio.NetHdrFNeedsCsum|virtio.NetHdrFDataValid) != 0 {
		return false
	}
	if h.Flags&virtio.NetHdrFNeedsCsum != 0 && int(h.CsumStart)+int(h.CsumOffset)+2 > n {
		return false
	}
	gso := h.GSOType &^ virtio.NetHdrGSOECN
	if gso == virtio.NetHdrGSONone {
		return h.GSOType == virtio.NetHdrGSONone
	}
	ecnOK := off&tunFTSOECN != 0
	switch gso {
	case virtio.NetHdrGSOTCPv4:
		if off&tunFTSO4 == 0 {
			return false
		}
	case virtio.NetHdrGSOTCPv6:
		if off&tunFTSO6 == 0 {
			return false
		}
	case virtio.NetHdrGSOUDPL4:
		if off&(tunFUSO4|tunFUSO6) == 0 {
			return false
		}
		ecnOK = false
	default:
		return false
	}
	if h.GSOType&virtio.NetHdrGSOECN != 0 && !ecnOK {
		return false
	}
	return h.Flags&virtio.NetHdrFNeedsCsum != 0 && h.GSOSize != 0 && int(h.HdrLen) <= n
}

// Close stops the readers (it returns when none runs), closes the device's
// file descriptors and deletes the device if OpenTAP created it. Frames
// sent after Close are dropped. Close is idempotent.
func (t *TAP) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	for _, q := range t.queues {
		// Send writes to the raw fd under wmu: once closed is set there,
		// no writer uses it, and it can be closed without being reused
		// under a writer's feet.
		q.wmu.Lock()
		q.closed = true
		q.wmu.Unlock()
	}
	return t.release()
}
