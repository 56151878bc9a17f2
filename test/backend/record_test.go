package backend

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParsePortStats(t *testing.T) {
	line := `{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"port stats","port":"guest0",` +
		`"rx_packets":12,"rx_bytes":18446744073709551615,"tx_packets":0,"tx_bytes":0,"drop_no_buffers":3,"drop_bad":0}`
	r, ok := ParseRecord(line)
	require.True(t, ok)
	require.Equal(t, "port stats", r.Msg())
	s, err := ParsePortStats(r)
	require.NoError(t, err)
	require.Equal(t, PortStats{
		Port: "guest0", RxPackets: 12, RxBytes: 1<<64 - 1,
		Drops: map[string]uint64{"no_buffers": 3, "bad": 0},
	}, s)
	require.Equal(t, uint64(3), r.Num("drop_no_buffers"))
	require.Zero(t, r.Num("drop_absent"))

	delete(r, "tx_bytes")
	_, err = ParsePortStats(r)
	require.ErrorContains(t, err, "tx_bytes")
	_, err = ParsePortStats(Record{"msg": "port stats"})
	require.ErrorContains(t, err, "without port")
}

func TestParseRecord(t *testing.T) {
	for _, line := range []string{"", "null", "panic: boom", "[1]", `"msg"`} {
		_, ok := ParseRecord(line)
		require.False(t, ok, "%q", line)
	}
	r, ok := ParseRecord(`{"msg":"listening","path":"/tmp/s","n":-1}`)
	require.True(t, ok)
	require.Equal(t, "/tmp/s", r.String("path"))
	_, ok = r.Uint("n")
	require.False(t, ok, "a negative number is no counter")
}

func TestTailLines(t *testing.T) {
	lines := []Line{{At: time.Second, Text: "a"}, {At: 1500 * time.Millisecond, Text: "b"}}
	require.Equal(t, "  1.500s | b\n", TailLines(lines, 1))
	require.Equal(t, 2, strings.Count(TailLines(lines, 5), "\n"))
}

func TestExitString(t *testing.T) {
	require.Equal(t, "0", ExitString(nil))
	require.Equal(t, "exit status 3", ExitString(errors.New("exit status 3")))
}
