package main

import (
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/hostif"
)

// TestVMNetFlags: --uplink vmnet[:MODE] and --vmnet-helper, and the
// combinations refused.
func TestVMNetFlags(t *testing.T) {
	for _, tc := range []struct {
		args        []string
		mode, iface string
	}{
		{[]string{"--uplink", "vmnet"}, hostif.VMNetShared, ""},
		{[]string{"--uplink", "vmnet:shared", "--forward", "tcp:8080:web:80"}, hostif.VMNetShared, ""},
		{[]string{"--uplink", "vmnet:host", "--vmnet-helper", "/opt/x/vmnet-helper"}, hostif.VMNetHost, ""},
		{[]string{"--uplink", "vmnet:bridged:en0"}, hostif.VMNetBridged, "en0"},
	} {
		c, err := parseFlags(append([]string{"--socket", "/s"}, tc.args...), io.Discard)
		require.NoError(t, err, tc.args)
		require.Equal(t, "vmnet", c.uplink)
		require.True(t, c.routed() && c.guestNetwork())
		require.Equal(t, tc.mode, c.vmnetMode, tc.args)
		require.Equal(t, tc.iface, c.vmnetIface, tc.args)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--uplink", "vmnet:nat"}, "unknown kind"},
		{[]string{"--uplink", "vmnet:bridged"}, "bridged mode needs the host interface"},
		{[]string{"--uplink", "vmnet:bridged:"}, "want vmnet:bridged:IFACE"},
		{[]string{"--uplink", "vmnet:bridged:a/b"}, "want vmnet:bridged:IFACE"},
		{[]string{"--uplink", "vmnet", "--masquerade"}, "--masquerade is for --uplink tap"},
		{[]string{"--uplink", "tap", "--vmnet-helper", "/x"}, "--vmnet-helper is for --uplink vmnet"},
	} {
		_, err := parseFlags(append([]string{"--socket", "/s"}, tc.args...), io.Discard)
		require.ErrorContains(t, err, tc.want, tc.args)
	}
}
