package netns

import (
	"fmt"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TxChecksumOff turns off TX checksum offload on link in n (what
// `ethtool -K LINK tx off` does: the ETHTOOL_STXCSUM ioctl,
// include/uapi/linux/ethtool.h), so that the frames it sends carry
// complete TCP/UDP checksums.
//
// Why the XDP uplink's tests need it on the peer of the NIC it attaches to: a veth with checksum offload (the default)
// hands its peer CHECKSUM_PARTIAL skbs, whose transport checksum field
// holds only the pseudo-header sum; the kernel's stack trusts the skb's
// flag, but an XDP program (and an AF_XDP socket) sees the bytes alone.
// Frames from a real NIC always carry complete checksums.
func (n *NS) TxChecksumOff(t testing.TB, link string) {
	t.Helper()
	const ethtoolSTXCSUM = 0x17
	err := n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		val := struct{ cmd, data uint32 }{ethtoolSTXCSUM, 0}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data uintptr
			_    [16]byte
		}
		copy(ifr.name[:], link)
		ifr.data = uintptr(unsafe.Pointer(&val))
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(&val)
		if e != 0 {
			return fmt.Errorf("ETHTOOL_STXCSUM %s: %w", link, e)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("netns: %s: %v", n.Name, err)
	}
}
