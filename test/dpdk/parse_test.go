package dpdk

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Feature bits the tests look for in the features virtio_user negotiated
// (virtio 1.2 §5.1.3 and §6).
const (
	featMrgRxbuf   uint64 = 1 << 15 // VIRTIO_NET_F_MRG_RXBUF
	featMQ         uint64 = 1 << 22 // VIRTIO_NET_F_MQ
	featInOrder    uint64 = 1 << 35 // VIRTIO_F_IN_ORDER
	featRingPacked uint64 = 1 << 34 // VIRTIO_F_RING_PACKED
	featVersion1   uint64 = 1 << 32 // VIRTIO_F_VERSION_1
)

// A testpmd log as DPDK 22.11 prints it (trimmed), with two streams.
const testpmdGolden = "virtio_ethdev_negotiate_features(): features after negotiate = 910478000\n" +
	"Configuring Port 0 (socket 0)\nPort 0: FE:11:B7:8B:0B:36\nChecking link statuses...\nDone\n" +
	"\x1b[2J\x1b[1;1H\nPort statistics ====================================\n" +
	"  ######################## NIC statistics for port 0  ########################\n" +
	"  RX-packets: 0          RX-missed: 0          RX-bytes:  0\n" +
	"  Rx-pps:            0          Rx-bps:            0\n" +
	"  ############################################################################\n" +
	"Telling cores to stop...\n\n" +
	"  ------- Forward Stats for RX Port= 0/Queue= 0 -> TX Port= 0/Queue= 0 -------\n" +
	"  RX-packets: 20297056       TX-packets: 20297120       TX-dropped: 0             \n\n" +
	"  ------- Forward Stats for RX Port= 0/Queue= 1 -> TX Port= 0/Queue= 1 -------\n" +
	"  RX-packets: 20297184       TX-packets: 20297216       TX-dropped: 5             \n\n" +
	"  ---------------------- Forward statistics for port 0  ----------------------\n" +
	"  RX-packets: 40594240       RX-dropped: 0             RX-total: 40594240\n" +
	"  TX-packets: 40594336       TX-dropped: 5             TX-total: 40594341\n" +
	"  ----------------------------------------------------------------------------\n\n" +
	"  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++\n" +
	"  RX-packets: 40594240       RX-dropped: 0             RX-total: 40594240\n" +
	"  TX-packets: 40594336       TX-dropped: 5             TX-total: 40594341\n" +
	"  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++\n\nDone.\n"

func TestParseForwardStats(t *testing.T) {
	tests := []struct {
		name    string
		log     string
		want    FwdStats
		wantErr bool
	}{
		{
			name: "two streams",
			log:  testpmdGolden,
			want: FwdStats{
				Total: FwdCounters{RxPackets: 40594240, TxPackets: 40594336, TxDropped: 5},
				Streams: []StreamCounters{
					{RxPackets: 20297056, TxPackets: 20297120},
					{RxQueue: 1, TxQueue: 1, RxPackets: 20297184, TxPackets: 20297216, TxDropped: 5},
				},
			},
		},
		{name: "killed before it printed", log: "EAL: Detected CPU lcores: 2\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseForwardStats(tt.log)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestParseTestpmdStart(t *testing.T) {
	f, ok := ParseNegotiated(testpmdGolden)
	require.True(t, ok)
	require.Equal(t, uint64(0x910478000), f)
	require.NotZero(t, f&featMrgRxbuf)
	require.NotZero(t, f&featMQ)
	require.NotZero(t, f&featInOrder)
	require.NotZero(t, f&featVersion1)
	require.True(t, PortStarted(testpmdGolden))
	require.False(t, PortStarted("Checking link statuses...\nPort 0 Link down\nDone\nPort 0: FE:11:B7:8B:0B:36\n"))
	require.False(t, PortStarted("testpmd: No probed ethernet devices\n"))
	readable := ReadableTestpmdLog(testpmdGolden)
	require.NotContains(t, readable, "Rx-pps")
	require.Contains(t, readable, "features after negotiate")
	require.Contains(t, readable, "Accumulated forward statistics")
}

func TestParsePortStats(t *testing.T) {
	log := `{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"listening","path":"/tmp/x/s.sock"}
{"time":"2026-01-01T00:00:01Z","level":"INFO","msg":"port stats","port":"guest0","rx_packets":18446744073709551615,"rx_bytes":64,"tx_packets":2,"tx_bytes":128,"drop_no_buffer":3,"drop_sink":1}
panic: not JSON
{"time":"2026-01-01T00:00:02Z","level":"INFO","msg":"port stats","port":"guest1","rx_packets":7}
`
	recs, other := ParseJSONLog([]byte(log))
	require.Len(t, recs, 3)
	require.Equal(t, []string{"panic: not JSON"}, other)
	require.Equal(t, "listening", recs[0].Msg())
	ps := PortStatsRecords(recs, "guest0")
	require.Len(t, ps, 1)
	require.Equal(t, PortStats{
		Port: "guest0", RxPackets: 1<<64 - 1, RxBytes: 64, TxPackets: 2, TxBytes: 128,
		Drops: map[string]uint64{"no_buffer": 3, "sink": 1},
	}, ps[0])
	g1 := PortStatsRecords(recs, "guest1")
	require.Len(t, g1, 1)
	require.Equal(t, []string{"rx_bytes", "tx_packets", "tx_bytes"}, g1[0].missingCounterFields)
}
