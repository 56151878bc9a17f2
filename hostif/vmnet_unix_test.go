//go:build unix

package hostif

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/datapath/datapathtest"
	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
	"github.com/arcnet/vhost-arcnet/datapath/router"
	"github.com/arcnet/vhost-arcnet/hostif/vmnettest"
	"github.com/arcnet/vhost-arcnet/nat"
)

// The tests below run the fake vmnet-helper (hostif/vmnettest) as the
// helper: this test binary, re-executed with vmnettest.Env=1 (TestMain).

var (
	vmGuestNet = netip.MustParsePrefix("192.168.127.0/24")
	vmGuestGW  = netip.MustParseAddr("192.168.127.1")
	vmGuestIP  = netip.MustParseAddr("192.168.127.10")
	vmGuestMAC = header.MAC{0x52, 0x54, 0, 0, 0, 0x10}
	vmGWMAC    = header.MAC{0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd}
)

// fakeEnv sets the fake's environment for the test: its lease file in a
// temporary directory, its PID file; extra are more KEY=VALUE pairs.
// It returns the PID file's path.
func fakeEnv(t *testing.T, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(vmnettest.Env, "1")
	t.Setenv("VMNET_FAKE_LEASES", filepath.Join(dir, "leases"))
	pid := filepath.Join(dir, "pid")
	t.Setenv("VMNET_FAKE_PIDFILE", pid)
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return pid
}

// openFake opens a VMNet on the fake with short DHCP and restart timers.
func openFake(t *testing.T, opt VMNetOptions) *VMNet {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	opt.Helper = exe
	if opt.StartTimeout == 0 {
		opt.StartTimeout = 20 * time.Second
	}
	opt.RestartMin, opt.RestartMax = 50*time.Millisecond, time.Second
	opt.dhcpRetry = 300 * time.Millisecond
	v, err := OpenVMNet(opt)
	if err != nil {
		t.Fatalf("OpenVMNet: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// routed is a router and NAT engine in front of a VMNet, with a capture
// port playing the switch (where replies to the guest arrive).
type routed struct {
	rt  *router.Router
	lan *datapathtest.Capture
}

func newRouted(t *testing.T, v *VMNet) *routed {
	t.Helper()
	l := v.Lease()
	eng, err := nat.New(nat.Config{External: l.Addr, GuestPrefix: vmGuestNet, Router: vmGuestGW})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := router.New(router.Options{
		Subnet: vmGuestNet, GatewayAddr: vmGuestGW, GatewayMAC: vmGWMAC,
		Local: datapathtest.NewCapture("local"), NAT: eng,
		ExternalAddr: l.Addr, UplinkMAC: v.MAC(), NextHop: l.Router, MTU: v.MTU(),
		Neighbour: func(a netip.Addr) (header.MAC, bool) { return vmGuestMAC, a == vmGuestIP },
	})
	if err != nil {
		t.Fatal(err)
	}
	lan := datapathtest.NewCapture("switch")
	rt.SwitchPort().(interface{ SetPeer(datapath.Port) }).SetPeer(lan)
	rt.SetUplink(v)
	v.SetPeer(rt.UplinkPort())
	return &routed{rt: rt, lan: lan}
}

// ping sends an ICMP echo from the guest to dst through the router until
// the reply arrives at the guest (the router resolves its next hop by ARP
// first, dropping the first packets), or fails the test.
func (r *routed) ping(t *testing.T, dst netip.Addr, seq uint16) {
	t.Helper()
	payload := []byte("vmnet uplink test payload")
	f := headertest.Frame{
		Dst: vmGWMAC, Src: vmGuestMAC,
		IPv4:    &headertest.IPv4Header{Src: vmGuestIP, Dst: dst, TTL: 64},
		ICMP:    &headertest.ICMPHeader{Type: header.ICMPv4Echo, Rest: 0x4242<<16 | uint32(seq)},
		Payload: payload,
	}.Build()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		r.rt.SwitchPort().Send([]datapath.Frame{{Segs: [][]byte{f}, Len: len(f)}})
		end := time.Now().Add(300 * time.Millisecond)
		for time.Now().Before(end) {
			for _, fr := range r.lan.TakeFrames() {
				ip := header.IPv4(fr[header.EthernetMinSize:])
				if len(fr) < 42 || ip.Protocol() != header.ProtoICMP {
					continue
				}
				icmp := fr[header.EthernetMinSize+ip.HeaderLen():]
				if icmp[0] == header.ICMPv4EchoReply && binary.BigEndian.Uint16(icmp[6:]) == seq {
					headertest.CheckIPv4(t, fr, headertest.Src(dst), headertest.Dst(vmGuestIP), headertest.EthDst(vmGuestMAC))
					if !bytes.Equal(icmp[8:], payload) {
						t.Fatalf("echo reply payload %q, want %q", icmp[8:], payload)
					}
					return
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Fatalf("no echo reply from %v through the vmnet uplink", dst)
}

// TestVMNetFakeHelper: the helper is started with vmnet-helper's
// arguments, its MAC is taken from its description line, vhost-arcnet
// gets an address by DHCP over the frame link, and a guest's ping to the
// vmnet gateway goes out through the NAT with that address (the fake's
// gateway answers the leased address; the router translates the reply
// back to the guest).
func TestVMNetFakeHelper(t *testing.T) {
	fakeEnv(t)
	v := openFake(t, VMNetOptions{InterfaceID: "2835E074-9892-4A79-AFFB-7E41D2605678", Hostname: "arcnet"})
	l := v.Lease()
	if v.MAC() != vmnettest.MACFor("2835E074-9892-4A79-AFFB-7E41D2605678") {
		t.Errorf("MAC %v, want the helper's vmnet_mac_address %v", v.MAC(), vmnettest.MACFor("2835E074-9892-4A79-AFFB-7E41D2605678"))
	}
	if !vmnettest.Subnet.Contains(l.Addr) || l.Prefix != netip.PrefixFrom(l.Addr, 24) || l.Router != vmnettest.GatewayIP ||
		l.Server != vmnettest.GatewayIP || l.Duration != time.Hour || l.T1 != 30*time.Minute {
		t.Errorf("lease %+v: want an address of %v/24, router and server %v, 1 h, T1 30 min", l, vmnettest.Subnet, vmnettest.GatewayIP)
	}
	if v.RouterMAC() != header.MAC(vmnettest.GatewayMAC) {
		t.Errorf("router MAC %v, want %v (by ARP)", v.RouterMAC(), vmnettest.GatewayMAC)
	}
	if v.Info().MTU != 1500 || v.Info().Prefix() != vmnettest.Subnet {
		t.Errorf("info %+v", v.Info())
	}
	r := newRouted(t, v)
	v.Start()
	r.ping(t, vmnettest.GatewayIP, 1)
	st := r.rt.Stats()
	if st.Translated[router.Out].Load() == 0 || st.Translated[router.In].Load() == 0 {
		t.Errorf("router translated out %d in %d, want > 0", st.Translated[router.Out].Load(), st.Translated[router.In].Load())
	}
	if v.Stats().TxPackets.Load() == 0 || v.Stats().RxPackets.Load() == 0 {
		t.Errorf("vmnet tx %d rx %d, want > 0", v.Stats().TxPackets.Load(), v.Stats().RxPackets.Load())
	}
}

// TestVMNetHelperRestart: a helper that dies (SIGKILL) is restarted with
// the same interface ID, the lease is confirmed for the same address
// (INIT-REBOOT), and traffic flows again.
func TestVMNetHelperRestart(t *testing.T) {
	pidFile := fakeEnv(t)
	leases := make(chan VMNetLease, 4)
	v := openFake(t, VMNetOptions{OnLease: func(l VMNetLease) { leases <- l }})
	first := v.Lease()
	r := newRouted(t, v)
	v.Start()
	r.ping(t, vmnettest.GatewayIP, 1)
	for i := range 2 {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(string(b))
		if err != nil || pid != v.link.Load().proc.cmd.Process.Pid {
			t.Fatalf("pid file %q, helper pid %d", b, v.link.Load().proc.cmd.Process.Pid)
		}
		// The helper is this test's grandchild through v: killed by the
		// PID v started it with.
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		select {
		case l := <-leases:
			if l.Addr != first.Addr {
				t.Fatalf("after the restart the lease is %v, want %v again", l.Addr, first.Addr)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no lease after the helper was killed")
		}
		if got := v.Restarts(); got != uint64(i+1) {
			t.Errorf("restarts %d, want %d", got, i+1)
		}
		r.ping(t, vmnettest.GatewayIP, uint16(i+2))
	}
}

// TestVMNetRenew: with a 10 s lease the client renews at T1 (5 s) by
// unicast to the server and keeps the address.
func TestVMNetRenew(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for T1 (5 s)")
	}
	fakeEnv(t, "VMNET_FAKE_LEASE_SECONDS=10")
	leases := make(chan VMNetLease, 4)
	v := openFake(t, VMNetOptions{OnLease: func(l VMNetLease) { leases <- l }})
	first := v.Lease()
	if first.Duration != 10*time.Second || first.T1 != 5*time.Second {
		t.Fatalf("lease %v T1 %v, want 10 s and 5 s", first.Duration, first.T1)
	}
	v.Start()
	select {
	case l := <-leases:
		if l.Addr != first.Addr || !l.Obtained.After(first.Obtained.Add(4*time.Second)) {
			t.Fatalf("renewed lease %v obtained %v, want %v after T1", l.Addr, l.Obtained, first.Addr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the lease was not renewed")
	}
}

// TestVMNetHelperErrors: a helper that fails, is missing, describes its
// interface badly or never does gives a clear error from OpenVMNet.
func TestVMNetHelperErrors(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		env    []string
		opt    VMNetOptions
		helper string
		want   string
	}{
		{"fails", []string{"VMNET_FAKE_FAIL=cannot start vmnet: VMNET_FAILURE"}, VMNetOptions{}, exe,
			"exited before describing the interface: helper (pid"},
		{"fails-message", []string{"VMNET_FAKE_FAIL=cannot start vmnet: VMNET_FAILURE"}, VMNetOptions{}, exe, "VMNET_FAILURE"},
		{"missing", nil, VMNetOptions{}, "/nonexistent/vmnet-helper", "not found: install vmnet-helper"},
		{"bad-json", []string{"VMNET_FAKE_INFO={\"vmnet_mtu\":1500}"}, VMNetOptions{}, exe, "no vmnet_mac_address"},
		{"no-dhcp", []string{"VMNET_FAKE_NO_DHCP=1"}, VMNetOptions{StartTimeout: 2 * time.Second}, exe,
			"no address from vmnet's DHCP server within 2s"},
		{"bad-mode", nil, VMNetOptions{Mode: "nat"}, exe, "want shared, host or bridged:IFACE"},
		{"bridged-no-iface", nil, VMNetOptions{Mode: VMNetBridged}, exe, "bridged mode needs a host interface"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fakeEnv(t, tc.env...)
			opt := tc.opt
			opt.Helper = tc.helper
			opt.dhcpRetry = 200 * time.Millisecond
			if opt.StartTimeout == 0 {
				opt.StartTimeout = 10 * time.Second
			}
			v, err := OpenVMNet(opt)
			if err == nil {
				v.Close()
				t.Fatalf("OpenVMNet succeeded, want an error with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestVMNetBridgedArgs: bridged mode passes the interface to the helper
// (the fake refuses bridged mode without --shared-interface).
func TestVMNetBridgedArgs(t *testing.T) {
	fakeEnv(t)
	v := openFake(t, VMNetOptions{Mode: VMNetBridged, Interface: "en0"})
	if !v.Lease().Addr.IsValid() {
		t.Fatal("no lease")
	}
	want := []string{"--fd=3", "--interface-id=" + v.opt.InterfaceID, "--operation-mode=bridged", "--shared-interface=en0"}
	if got := v.helperArgs(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("helper args %q, want %q", got, want)
	}
}

// TestVMNetSendAllocs: writing frames to the helper allocates nothing.
func TestVMNetSendAllocs(t *testing.T) {
	fakeEnv(t)
	v := openFake(t, VMNetOptions{})
	f := headertest.Frame{
		Dst: header.BroadcastMAC, Src: v.MAC(),
		IPv4: &headertest.IPv4Header{Src: v.Lease().Addr, Dst: netip.MustParseAddr("192.168.105.200")},
		UDP:  &headertest.UDPHeader{SrcPort: 9, DstPort: 9}, Payload: make([]byte, 1000),
	}.Build()
	frames := make([]datapath.Frame, 16)
	for i := range frames {
		frames[i] = datapath.Frame{Segs: [][]byte{f[:30], f[30:]}, Len: len(f)}
	}
	if a := testing.AllocsPerRun(100, func() { v.Send(frames) }); a != 0 {
		t.Errorf("Send: %v allocs per call, want 0", a)
	}
	if v.Stats().TxPackets.Load() == 0 {
		t.Error("nothing sent")
	}
}
