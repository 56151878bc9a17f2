//go:build linux

package qemu

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParsePortStats(t *testing.T) {
	line := `{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"port stats","port":"guest0",` +
		`"rx_packets":12,"rx_bytes":18446744073709551615,"tx_packets":0,"tx_bytes":0,"drop_no_buffers":3,"drop_bad":0}`
	var r LogRecord
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&r))
	require.Equal(t, "port stats", r.Msg())
	s, err := parsePortStats(r)
	require.NoError(t, err)
	require.Equal(t, PortStats{
		Port: "guest0", RxPackets: 12, RxBytes: 1<<64 - 1,
		Drops: map[string]uint64{"no_buffers": 3, "bad": 0},
	}, s)

	delete(r, "tx_bytes")
	_, err = parsePortStats(r)
	require.ErrorContains(t, err, "tx_bytes")
	_, err = parsePortStats(LogRecord{"msg": "port stats"})
	require.ErrorContains(t, err, "without port")
}
