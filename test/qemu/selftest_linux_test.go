//go:build linux

package qemu

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHarnessSlirp proves the harness without vhost-arcnet: a guest on
// QEMU's user-mode network (everything stays inside QEMU) gets 10.0.2.15 by
// DHCP, pings the gateway 10.0.2.2, sends a raw frame, and waits on the
// console for the test to wake it with a value it then uses.
func TestHarnessSlirp(t *testing.T) {
	t.Parallel()
	env := NewEnv(t, 1)
	// An ARP request for 10.0.2.2 from the guest's MAC, built here and
	// sent by arcnet-rawframe from an AF_PACKET socket.
	mac := "52:54:00:ac:ff:01"
	frame := "ffffffffffff" + strings.ReplaceAll(mac, ":", "") + "0806" +
		"0001080006040001" + strings.ReplaceAll(mac, ":", "") + "0a00020f" + "000000000000" + "0a000202"
	g := env.StartGuest(GuestConfig{
		Name:  "slirp",
		Net:   UserNet{},
		MAC:   mac,
		Test:  "dhcp,ping:10.0.2.2,raw:" + frame + ":2,wait:go,ping:@target:1",
		Knobs: []string{"pings=2"},
	})
	require.NoError(t, g.AwaitWait("go", 90*time.Second))
	require.NoError(t, g.Wake("go", "target=10.0.2.2"))
	c := g.Wait()
	require.True(t, c.Passed(), "guest: %s", c.Result())

	nic, ok := c.First("NIC")
	require.True(t, ok)
	require.Equal(t, "virtio_net", nic.Get("driver"))
	require.Equal(t, mac, nic.Get("mac"))
	ip, ok := c.First("IP")
	require.True(t, ok)
	require.Equal(t, "10.0.2.15", ip.Get("ip"))
	require.Equal(t, "10.0.2.2", ip.Get("server")) // restrict=on: slirp offers no router
	raw, ok := c.First("RAW")
	require.True(t, ok)
	require.Equal(t, "2", raw.Get("sent"))
	pings := c.All("PING")
	require.Len(t, pings, 2)
	require.Equal(t, "10.0.2.2", pings[1].Get("target"))
	rx, err := c.Stats("rx_packets")
	require.NoError(t, err)
	require.NotZero(t, rx)
}
