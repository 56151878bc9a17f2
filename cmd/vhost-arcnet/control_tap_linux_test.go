//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/internal/testlog"
	"github.com/arcnet/vhost-arcnet/test/netns"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
)

// runEnv makes the test binary run vhost-arcnet's main with the JSON list
// of arguments it holds instead of the tests: TestControlForwardTAP starts
// vhost-arcnet that way inside a network namespace.
const runEnv = "VHOST_ARCNET_TEST_MAIN_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(runEnv); args != "" {
		var a []string
		if err := json.Unmarshal([]byte(args), &a); err != nil {
			panic(err)
		}
		os.Args = append([]string{"vhost-arcnet"}, a...)
		main() // exits
	}
	os.Exit(m.Run())
}

// With a real TAP (vhost-arcnet as its own process in a throwaway network
// namespace, --uplink tap): a forward added through the control API
// listens in the namespace at once, and a host client's connection follows
// it through the TAP and the NAT engine to the guest (the Go frontend sees
// the SYN from the host's end of the link to its port, and the flow is
// listed); removed, the forward refuses the next connection. SIGTERM then
// removes the control socket.
func TestControlForwardTAP(t *testing.T) {
	ns := netns.New(t, "ctl") // skips unless root
	dir, err := os.MkdirTemp("", "ctltap")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock, ctl := filepath.Join(dir, "vm.sock"), filepath.Join(dir, "control.sock")
	const guestAddr = "192.168.127.50"
	args, err := json.Marshal([]string{"--socket", sock, "--uplink", "tap", "--lease-file", "none",
		"--dns-upstream", "127.0.0.1:9", "--control", ctl, "--reserve", testGuestMAC.String() + "=" + guestAddr})
	require.NoError(t, err)
	cmd := ns.Command(os.Args[0])
	cmd.Env = append(os.Environ(), runEnv+"="+string(args))
	out := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill() // by the PID this test started
			<-exited
		}
		if t.Failed() {
			t.Logf("vhost-arcnet's output:\n%s", out.String())
		}
	})
	var died error
	require.Eventually(t, func() bool {
		select {
		case err := <-exited:
			exited <- err
			died = fmt.Errorf("vhost-arcnet exited: %v", err)
			return true
		default:
		}
		if _, err := os.Stat(sock); err != nil {
			return false
		}
		_, err := newCtlClient(ctl).do("GET", "/v1/ports", nil)
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "vhost-arcnet did not come up")
	require.NoError(t, died)

	f := vhostusertest.New(t, vhostusertest.Options{Timeout: 5 * time.Second})
	require.NoError(t, f.Dial(sock))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(1, 256))
	g := &testGuest{t: t, f: f}
	g.ip = g.dhcp(testGuestMAC, "vm1", netip.Addr{})
	require.Equal(t, guestAddr, g.ip.String(), "the guest gets its reservation")

	const hostPort, guestPort = 18085, 8080
	var o, e bytes.Buffer
	spec := "tcp:127.0.0.1:" + strconv.Itoa(hostPort) + ":vm1:" + strconv.Itoa(guestPort)
	require.Equal(t, 0, ctlCommand([]string{"--control", ctl, "forward", "add", spec}, &o, &e), e.String())
	require.Contains(t, o.String(), guestAddr+":"+strconv.Itoa(guestPort), "resolved by the guest's host name")

	// A host client in the namespace connects; the relay's connection
	// reaches the guest through the TAP and the NAT engine.
	client, err := ns.DialTCP(t, "127.0.0.1:"+strconv.Itoa(hostPort), 5*time.Second)
	require.NoError(t, err)
	defer client.Close()
	syn := g.waitSYN(guestPort)
	require.Equal(t, "198.19.255.253", syn.Addr().String(), "from the host's end of the link (README)")

	var flows apiFlows
	b, err := newCtlClient(ctl).do("GET", "/v1/flows", nil)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &flows))
	found := false
	for _, fl := range flows.Flows {
		if fl.Proto == "tcp" && fl.Side == "uplink" && fl.Reply.Src == guestAddr+":"+strconv.Itoa(guestPort) {
			found = true
		}
	}
	require.True(t, found, "the forwarded flow is listed: %s", b)

	// Removed: the next connection is refused.
	o.Reset()
	require.Equal(t, 0, ctlCommand([]string{"--control", ctl, "forward", "rm", "tcp:" + strconv.Itoa(hostPort)}, &o, &e), e.String())
	_, err = ns.DialTCP(t, "127.0.0.1:"+strconv.Itoa(hostPort), 5*time.Second)
	require.True(t, errors.Is(err, syscall.ECONNREFUSED), "after removal: %v", err)

	f.Disconnect()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		exited <- err
		require.NoError(t, err, "exit status after SIGTERM")
	case <-time.After(20 * time.Second):
		t.Fatal("vhost-arcnet did not exit on SIGTERM")
	}
	_, err = os.Lstat(ctl)
	require.True(t, os.IsNotExist(err), "the control socket is removed at exit")
}

// waitSYN waits for a TCP SYN to the guest's port and returns its source.
func (g *testGuest) waitSYN(port uint16) netip.AddrPort {
	g.t.Helper()
	ip, tcp := g.recvTCPWhere(port, func(t header.TCP) bool { return t.Flags()&header.TCPFlagSYN != 0 }, "SYN")
	return netip.AddrPortFrom(ip.Src(), tcp.SrcPort())
}
