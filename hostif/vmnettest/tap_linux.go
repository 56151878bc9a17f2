package vmnettest

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// openTAP creates the TAP name (IFF_TAP|IFF_NO_PI, Linux
// Documentation/networking/tuntap.rst) in the network namespace ns (""
// for the fake's own), gives it addr and sets it up. The device goes with
// the returned file (not persistent).
func openTAP(name, ns string, addr netip.Prefix) (io.ReadWriteCloser, error) {
	runtime.LockOSThread() // this thread may switch namespace and stay there: it dies with the goroutine
	if ns != "" {
		h, err := vnetns.GetFromName(ns)
		if err != nil {
			return nil, fmt.Errorf("namespace %s: %w", ns, err)
		}
		err = vnetns.Set(h)
		h.Close()
		if err != nil {
			return nil, fmt.Errorf("entering namespace %s: %w", ns, err)
		}
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF: %w", err)
	}
	link, err := netlink.LinkByName(name)
	if err == nil {
		var a *netlink.Addr
		if a, err = netlink.ParseAddr(addr.String()); err == nil {
			err = netlink.AddrAdd(link, a)
		}
		if err == nil {
			err = netlink.LinkSetUp(link)
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Blocking file: the fake's readers are plain goroutines.
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}
