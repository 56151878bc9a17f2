// Package vmnettest is a fake vmnet-helper for tests: a program that speaks
// vmnet-helper's protocol (github.com/nirs/vmnet-helper
// docs/integration.md) on any Unix, so that vhost-arcnet's vmnet uplink
// (hostif.VMNet) is tested where there is no vmnet.
//
// Like vmnet-helper started with --fd, the fake takes a unix datagram
// socket as fd N, writes one line of JSON describing "its interface" on
// stdout (vmnet_mac_address derived from --interface-id, as vmnet keeps a
// MAC per interface ID; vmnet_mtu; vmnet_start_address ...), then carries
// one Ethernet frame per datagram. Behind the socket it plays vmnet's
// network 192.168.105.0/24: a DHCP server at 192.168.105.1 (the project's
// own services.Gateway, with a lease file so that a restarted fake keeps
// the lease, like macOS's bootpd) and either
//
//   - the gateway's other services (ARP, ICMP echo for 192.168.105.1), or
//   - with VMNET_FAKE_TAP=NAME, a TAP device NAME holding 192.168.105.1/24
//     in the network namespace VMNET_FAKE_NETNS (Linux, root): every frame
//     but DHCP's goes to the kernel there, and back.
//
// It exits 0 on SIGTERM or SIGINT (as vmnet-helper does), and with status 1
// and a message on stderr on bad arguments or when VMNET_FAKE_FAIL is set
// (before the description line). VMNET_FAKE_PIDFILE, if set, gets its PID
// (tests kill it to play a helper that dies). VMNET_FAKE_INFO replaces the
// description line; VMNET_FAKE_NO_DHCP makes the DHCP server mute;
// VMNET_FAKE_LEASE_SECONDS sets the lease time (default 3600).
//
// A test binary runs the fake as its helper by calling Main from TestMain
// when the environment variable VMNET_FAKE_HELPER is 1. Nothing outside
// tests uses this package.
package vmnettest

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/services"
)

// Env is the variable that makes a test binary run Main.
const Env = "VMNET_FAKE_HELPER"

// The fake's network, as vmnet's shared mode picks it.
var (
	Subnet    = netip.MustParsePrefix("192.168.105.0/24")
	GatewayIP = netip.MustParseAddr("192.168.105.1")
	// GatewayMAC is the DHCP server's MAC.
	GatewayMAC = net.HardwareAddr{0x5a, 0x94, 0xef, 0x00, 0x00, 0x01}
)

// MACFor returns the MAC the fake reports for an interface ID: a locally
// administered unicast address hashed from the ID.
func MACFor(id string) header.MAC {
	h := sha256.Sum256([]byte(id))
	var m header.MAC
	copy(m[:], h[:6])
	m[0] = m[0]&^0x01 | 0x02
	return m
}

// Main runs the fake with vmnet-helper's arguments and returns its exit
// status.
func Main(args []string) int {
	if err := run(args); err != nil {
		fmt.Fprintf(os.Stderr, "ERROR [main] %v\n", err)
		return 1
	}
	return 0
}

func run(args []string) error {
	fs := flag.NewFlagSet("vmnet-helper", flag.ContinueOnError)
	fd := fs.Int("fd", -1, "socket fd")
	id := fs.String("interface-id", "", "interface UUID")
	mode := fs.String("operation-mode", "shared", "shared|host|bridged")
	shared := fs.String("shared-interface", "", "bridged interface")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *fd < 3:
		return errors.New("--fd N (N >= 3) is required")
	case *mode == "bridged" && *shared == "":
		return errors.New("bridged mode requires --shared-interface")
	case *mode != "shared" && *mode != "host" && *mode != "bridged":
		return fmt.Errorf("invalid operation mode %q", *mode)
	}
	if msg := os.Getenv("VMNET_FAKE_FAIL"); msg != "" {
		return errors.New(msg)
	}
	if p := os.Getenv("VMNET_FAKE_PIDFILE"); p != "" {
		if err := os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return err
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	gw, err := services.NewGateway(services.Config{
		Subnet: Subnet, Gateway: GatewayIP, MAC: GatewayMAC, Domain: "vmnet.test",
		LeaseTime: leaseTime(), LeaseFile: os.Getenv("VMNET_FAKE_LEASES"),
		DNSUpstreams: []string{"127.0.0.1:9"}, Logger: log,
	})
	if err != nil {
		return err
	}
	defer gw.Close()
	sock := os.NewFile(uintptr(*fd), "vmnet")
	defer sock.Close()
	var tap io.ReadWriteCloser
	if name := os.Getenv("VMNET_FAKE_TAP"); name != "" {
		if tap, err = openTAP(name, os.Getenv("VMNET_FAKE_NETNS"), netip.PrefixFrom(GatewayIP, Subnet.Bits())); err != nil {
			return fmt.Errorf("tap %s: %w", name, err)
		}
		defer tap.Close()
	}
	info := map[string]any{
		"vmnet_mac_address":       MACFor(*id).String(),
		"vmnet_mtu":               1500,
		"vmnet_max_packet_size":   1514,
		"vmnet_interface_id":      *id,
		"vmnet_start_address":     GatewayIP.String(),
		"vmnet_end_address":       "192.168.105.254",
		"vmnet_subnet_mask":       "255.255.255.0",
		"vmnet_read_max_packets":  256,
		"vmnet_write_max_packets": 256,
	}
	line, _ := json.Marshal(info)
	if s := os.Getenv("VMNET_FAKE_INFO"); s != "" {
		line = []byte(s)
	}
	fmt.Fprintf(os.Stdout, "%s\n", line)
	fmt.Fprintf(os.Stderr, "INFO  [main] fake vmnet interface started (mode %s)\n", *mode)

	var wmu sync.Mutex
	write := func(f []byte) {
		wmu.Lock()
		_, _ = sock.Write(f)
		wmu.Unlock()
	}
	if tap != nil {
		go func() {
			buf := make([]byte, 65536)
			for {
				n, err := tap.Read(buf)
				if err != nil {
					return
				}
				write(buf[:n])
			}
		}()
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	errc := make(chan error, 1)
	noDHCP := os.Getenv("VMNET_FAKE_NO_DHCP") != ""
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := sock.Read(buf)
			if err != nil {
				errc <- err
				return
			}
			f := buf[:n]
			if noDHCP && isDHCPServerFrame(f) {
				continue
			}
			if tap != nil && !isDHCPServerFrame(f) {
				_, _ = tap.Write(f)
				continue
			}
			gw.HandleFrame(f, write)
		}
	}()
	select {
	case s := <-sigc:
		fmt.Fprintf(os.Stderr, "INFO  [main] received signal %v\n", s)
		return nil
	case err := <-errc:
		return fmt.Errorf("read: %w", err)
	}
}

// leaseTime is VMNET_FAKE_LEASE_SECONDS, default one hour.
func leaseTime() time.Duration {
	if s := os.Getenv("VMNET_FAKE_LEASE_SECONDS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	return time.Hour
}

// isDHCPServerFrame reports whether f is an IPv4 UDP datagram to port 67.
func isDHCPServerFrame(f []byte) bool {
	if len(f) < 14+20+8 || f[12] != 0x08 || f[13] != 0x00 || f[14]>>4 != 4 || f[23] != header.ProtoUDP {
		return false
	}
	ihl := int(f[14]&0x0f) * 4
	if len(f) < 14+ihl+4 {
		return false
	}
	return f[14+ihl+2] == 0 && f[14+ihl+3] == 67
}
