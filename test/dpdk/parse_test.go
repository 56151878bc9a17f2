package dpdk

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Feature bits the tests look for in the features virtio_user negotiated
// (virtio 1.2 §5.1.3 and §6).
const (
	featMrgRxbuf uint64 = 1 << 15 // VIRTIO_NET_F_MRG_RXBUF
	featMQ       uint64 = 1 << 22 // VIRTIO_NET_F_MQ
	featInOrder  uint64 = 1 << 35 // VIRTIO_F_IN_ORDER
	featVersion1 uint64 = 1 << 32 // VIRTIO_F_VERSION_1
)

// fwdCounters are one RX/TX pair of testpmd's forward statistics.
type fwdCounters struct {
	RxPackets, RxDropped, TxPackets, TxDropped uint64
}

// streamCounters are the counters of one forwarding stream (one queue):
// testpmd prints them when a port has more than one stream.
type streamCounters struct {
	RxPort, RxQueue, TxPort, TxQueue int
	RxPackets, TxPackets, TxDropped  uint64
}

// fwdStats is what testpmd prints when forwarding stops.
type fwdStats struct {
	Total   fwdCounters // "Accumulated forward statistics for all ports"
	Streams []streamCounters
}

var (
	ansiRE     = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)
	rxTotalRE  = regexp.MustCompile(`RX-packets:\s*(\d+)\s+RX-dropped:\s*(\d+)`)
	txTotalRE  = regexp.MustCompile(`TX-packets:\s*(\d+)\s+TX-dropped:\s*(\d+)`)
	streamRE   = regexp.MustCompile(`Forward Stats for RX Port=\s*(\d+)/Queue=\s*(\d+) -> TX Port=\s*(\d+)/Queue=\s*(\d+)`)
	streamCtRE = regexp.MustCompile(`RX-packets:\s*(\d+)\s+TX-packets:\s*(\d+)\s+TX-dropped:\s*(\d+)`)
	negotRE    = regexp.MustCompile(`features after negotiate = ([0-9a-fA-F]+)`)
	portMACRE  = regexp.MustCompile(`(?m)^Port 0: [0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}\s*$`)
)

func atou(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64) // the regexps only match digits
	return v
}

// parseForwardStats reads the forward statistics testpmd prints when it
// stops: the accumulated totals and the per-stream counters.
func parseForwardStats(log string) (fwdStats, error) {
	var st fwdStats
	lines := strings.Split(ansiRE.ReplaceAllString(log, ""), "\n")
	found := false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if m := streamRE.FindStringSubmatch(l); m != nil && i+1 < len(lines) {
			if c := streamCtRE.FindStringSubmatch(lines[i+1]); c != nil {
				st.Streams = append(st.Streams, streamCounters{
					RxPort: int(atou(m[1])), RxQueue: int(atou(m[2])),
					TxPort: int(atou(m[3])), TxQueue: int(atou(m[4])),
					RxPackets: atou(c[1]), TxPackets: atou(c[2]), TxDropped: atou(c[3]),
				})
				i++
			}
			continue
		}
		if !strings.Contains(l, "Accumulated forward statistics for all ports") {
			continue
		}
		for j := i + 1; j < len(lines) && j <= i+3; j++ {
			if m := rxTotalRE.FindStringSubmatch(lines[j]); m != nil {
				st.Total.RxPackets, st.Total.RxDropped = atou(m[1]), atou(m[2])
				found = true
			}
			if m := txTotalRE.FindStringSubmatch(lines[j]); m != nil {
				st.Total.TxPackets, st.Total.TxDropped = atou(m[1]), atou(m[2])
			}
		}
	}
	if !found {
		return st, fmt.Errorf("no \"Accumulated forward statistics\" in the testpmd log")
	}
	return st, nil
}

// parseNegotiated returns the feature bits virtio_user negotiated, from its
// init debug log ("features after negotiate = 910478000"); it needs
// --log-level=pmd.net.virtio.init:debug.
func parseNegotiated(log string) (uint64, bool) {
	m := negotRE.FindAllStringSubmatch(log, -1)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseUint(m[len(m)-1][1], 16, 64)
	return v, err == nil
}

// portStarted reports whether testpmd configured and started port 0 (it
// prints the port's MAC address then) and its link check ended with the link up.
func portStarted(log string) bool {
	log = ansiRE.ReplaceAllString(log, "")
	i := strings.Index(log, "Checking link statuses...")
	if !portMACRE.MatchString(log) || i < 0 {
		return false
	}
	rest := log[i:]
	return strings.Contains(rest, "Done") && !strings.Contains(rest[:strings.Index(rest, "Done")], "Link down")
}

// readableTestpmdLog drops the once-a-second statistics screens and terminal
// escapes, for printing a log when a test fails.
func readableTestpmdLog(log string) string {
	var b strings.Builder
	skip := false
	for _, l := range strings.Split(ansiRE.ReplaceAllString(log, ""), "\n") {
		switch {
		case strings.HasPrefix(l, "Port statistics ===="):
			skip = true
			continue
		case skip && strings.HasPrefix(strings.TrimSpace(l), "#####################"):
			if !strings.Contains(l, "NIC statistics") {
				skip = false
			}
			continue
		case skip:
			continue
		case strings.TrimSpace(l) == "":
			continue
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// logRecord is one JSON log record of vhost-arcnet (--log-format json).
type logRecord map[string]any

// Str returns attribute k as a string ("" if absent).
func (r logRecord) Str(k string) string {
	s, _ := r[k].(string)
	return s
}

// Uint returns attribute k as an unsigned number (ok=false if absent or not one).
func (r logRecord) Uint(k string) (uint64, bool) {
	n, ok := r[k].(json.Number)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(n.String(), 10, 64)
	return v, err == nil
}

// parseJSONLog splits a log into its JSON records; lines that are not JSON
// objects (a panic, a Go runtime message) are returned separately.
func parseJSONLog(data []byte) (recs []logRecord, other []string) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		d := json.NewDecoder(bytes.NewReader(line))
		d.UseNumber()
		var r logRecord
		if line[0] != '{' || d.Decode(&r) != nil {
			other = append(other, string(line))
			continue
		}
		recs = append(recs, r)
	}
	return recs, other
}

// portStats is one msg="port stats" record (the command-line contract).
type portStats struct {
	Port                 string
	RxPackets, RxBytes   uint64
	TxPackets, TxBytes   uint64
	Drops                map[string]uint64 // drop_<reason> attributes, by reason
	missingCounterFields []string
}

func (p portStats) String() string {
	return fmt.Sprintf("%s rx_packets=%d rx_bytes=%d tx_packets=%d tx_bytes=%d drops=%v",
		p.Port, p.RxPackets, p.RxBytes, p.TxPackets, p.TxBytes, p.Drops)
}

// portStatsRecords returns every msg="port stats" record of port, in log order.
func portStatsRecords(recs []logRecord, port string) []portStats {
	var out []portStats
	for _, r := range recs {
		if r.Str("msg") != "port stats" || r.Str("port") != port {
			continue
		}
		p := portStats{Port: port, Drops: map[string]uint64{}}
		for _, f := range []struct {
			k string
			v *uint64
		}{{"rx_packets", &p.RxPackets}, {"rx_bytes", &p.RxBytes}, {"tx_packets", &p.TxPackets}, {"tx_bytes", &p.TxBytes}} {
			v, ok := r.Uint(f.k)
			if !ok {
				p.missingCounterFields = append(p.missingCounterFields, f.k)
			}
			*f.v = v
		}
		for k := range r {
			if reason, ok := strings.CutPrefix(k, "drop_"); ok {
				p.Drops[reason], _ = r.Uint(k)
			}
		}
		out = append(out, p)
	}
	return out
}

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
		want    fwdStats
		wantErr bool
	}{
		{
			name: "two streams",
			log:  testpmdGolden,
			want: fwdStats{
				Total: fwdCounters{RxPackets: 40594240, TxPackets: 40594336, TxDropped: 5},
				Streams: []streamCounters{
					{RxPackets: 20297056, TxPackets: 20297120},
					{RxQueue: 1, TxQueue: 1, RxPackets: 20297184, TxPackets: 20297216, TxDropped: 5},
				},
			},
		},
		{name: "killed before it printed", log: "EAL: Detected CPU lcores: 2\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseForwardStats(tt.log)
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
	f, ok := parseNegotiated(testpmdGolden)
	require.True(t, ok)
	require.Equal(t, uint64(0x910478000), f)
	require.NotZero(t, f&featMrgRxbuf)
	require.NotZero(t, f&featMQ)
	require.NotZero(t, f&featInOrder)
	require.NotZero(t, f&featVersion1)
	require.True(t, portStarted(testpmdGolden))
	require.False(t, portStarted("Checking link statuses...\nPort 0 Link down\nDone\nPort 0: FE:11:B7:8B:0B:36\n"))
	require.False(t, portStarted("testpmd: No probed ethernet devices\n"))
	readable := readableTestpmdLog(testpmdGolden)
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
	recs, other := parseJSONLog([]byte(log))
	require.Len(t, recs, 3)
	require.Equal(t, []string{"panic: not JSON"}, other)
	require.Equal(t, "listening", recs[0].Str("msg"))
	ps := portStatsRecords(recs, "guest0")
	require.Len(t, ps, 1)
	require.Equal(t, portStats{
		Port: "guest0", RxPackets: 1<<64 - 1, RxBytes: 64, TxPackets: 2, TxBytes: 128,
		Drops: map[string]uint64{"no_buffer": 3, "sink": 1},
	}, ps[0])
	g1 := portStatsRecords(recs, "guest1")
	require.Len(t, g1, 1)
	require.Equal(t, []string{"rx_bytes", "tx_packets", "tx_bytes"}, g1[0].missingCounterFields)
}
