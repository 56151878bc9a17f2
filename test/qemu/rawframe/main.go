//go:build linux

// Command arcnet-rawframe sends Ethernet frames, given in hex, from an
// AF_PACKET socket bound to one interface: the test guest's way to put frames
// on the wire that its own stack would never build (a spoofed source MAC or
// IP, a malformed header). It is built for linux/amd64 with CGO_ENABLED=0 and
// put into the guest's initramfs by the test/qemu harness.
//
// Usage: arcnet-rawframe -i eth0 [-n COUNT] [-gap DURATION] HEX...
// It prints "sent=N bytes=M" on success.
package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "arcnet-rawframe:", err)
		os.Exit(1)
	}
}

// ethPAll is ETH_P_ALL (0x0003) in network byte order on the little-endian
// guest (amd64), as socket(2) and sockaddr_ll want it: htons(ETH_P_ALL).
const ethPAll = 0x0300

func run() error {
	ifname := flag.String("i", "eth0", "interface to send on")
	count := flag.Int("n", 1, "how many times to send each frame")
	gap := flag.Duration("gap", 0, "pause between frames")
	flag.Parse()
	if flag.NArg() == 0 {
		return fmt.Errorf("no frame given")
	}
	var frames [][]byte
	for _, a := range flag.Args() {
		b, err := hex.DecodeString(strings.NewReplacer(":", "", "-", "", ".", "").Replace(a))
		if err != nil {
			return fmt.Errorf("frame %q: %w", a, err)
		}
		if len(b) < 14 {
			return fmt.Errorf("frame %q: %d bytes, shorter than an Ethernet header", a, len(b))
		}
		frames = append(frames, b)
	}
	ifi, err := net.InterfaceByName(*ifname)
	if err != nil {
		return fmt.Errorf("interface %s: %w", *ifname, err)
	}
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, ethPAll)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer syscall.Close(fd)
	to := &syscall.SockaddrLinklayer{Protocol: ethPAll, Ifindex: ifi.Index}
	sent, bytes := 0, 0
	for range *count {
		for _, f := range frames {
			if err := syscall.Sendto(fd, f, 0, to); err != nil {
				return fmt.Errorf("send after %d frames: %w", sent, err)
			}
			sent++
			bytes += len(f)
			if *gap > 0 {
				time.Sleep(*gap)
			}
		}
	}
	fmt.Printf("sent=%d bytes=%d\n", sent, bytes)
	return nil
}
