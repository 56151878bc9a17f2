package dpdk

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/arcnet/vhost-arcnet/test/backend"
)

// FwdCounters are one RX/TX pair of testpmd's forward statistics.
type FwdCounters struct {
	RxPackets, RxDropped, TxPackets, TxDropped uint64
}

// StreamCounters are the counters of one forwarding stream (one queue):
// testpmd prints them when a port has more than one stream.
type StreamCounters struct {
	RxPort, RxQueue, TxPort, TxQueue int
	RxPackets, TxPackets, TxDropped  uint64
}

// FwdStats is what testpmd prints when forwarding stops.
type FwdStats struct {
	Total   FwdCounters // "Accumulated forward statistics for all ports"
	Streams []StreamCounters
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

// ParseForwardStats reads the forward statistics testpmd prints when it
// stops: the accumulated totals and the per-stream counters.
func ParseForwardStats(log string) (FwdStats, error) {
	var st FwdStats
	lines := strings.Split(ansiRE.ReplaceAllString(log, ""), "\n")
	found := false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if m := streamRE.FindStringSubmatch(l); m != nil && i+1 < len(lines) {
			if c := streamCtRE.FindStringSubmatch(lines[i+1]); c != nil {
				st.Streams = append(st.Streams, StreamCounters{
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

// ParseNegotiated returns the feature bits virtio_user negotiated, from its
// init debug log ("features after negotiate = 910478000"); it needs
// --log-level=pmd.net.virtio.init:debug.
func ParseNegotiated(log string) (uint64, bool) {
	m := negotRE.FindAllStringSubmatch(log, -1)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseUint(m[len(m)-1][1], 16, 64)
	return v, err == nil
}

// PortStarted reports whether testpmd configured and started port 0 (it
// prints the port's MAC address then) and its link check ended with the link up.
func PortStarted(log string) bool {
	log = ansiRE.ReplaceAllString(log, "")
	i := strings.Index(log, "Checking link statuses...")
	if !portMACRE.MatchString(log) || i < 0 {
		return false
	}
	rest := log[i:]
	return strings.Contains(rest, "Done") && !strings.Contains(rest[:strings.Index(rest, "Done")], "Link down")
}

// ReadableTestpmdLog drops the once-a-second statistics screens and terminal
// escapes, for printing a log when a test fails.
func ReadableTestpmdLog(log string) string {
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

// Keys of the packet rates in testpmd's periodic statistics screen
// (--stats-period): "  Rx-pps:     23912345          Rx-bps:  ...".
const (
	RxPPS = "Rx-pps:"
	TxPPS = "Tx-pps:"
)

// ParseRateLine returns the packet rate of one line of testpmd's periodic
// statistics when the line carries key (RxPPS or TxPPS): the number after it.
func ParseRateLine(line, key string) (uint64, bool) {
	i := strings.Index(line, key)
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(line[i+len(key):])
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[0], 10, 64)
	return v, err == nil
}

// ParseRates returns every rate of key in a testpmd log, in order.
func ParseRates(log, key string) []uint64 {
	var out []uint64
	for _, l := range strings.Split(log, "\n") {
		if v, ok := ParseRateLine(l, key); ok {
			out = append(out, v)
		}
	}
	return out
}

// LogRecord is one JSON log record of vhost-arcnet (--log-format json).
type LogRecord = backend.Record

// ParseJSONLog splits a log into its JSON records; lines that are not JSON
// objects (a panic, a Go runtime message) are returned separately.
func ParseJSONLog(data []byte) (recs []LogRecord, other []string) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		r, ok := backend.ParseRecord(string(line))
		if !ok {
			other = append(other, string(line))
			continue
		}
		recs = append(recs, r)
	}
	return recs, other
}

// Listening reports whether a vhost-arcnet log has its msg="listening"
// record for socket path sock.
func Listening(log, sock string) bool {
	recs, _ := ParseJSONLog([]byte(log))
	for _, r := range recs {
		if r.Msg() == "listening" && r.String("path") == sock {
			return true
		}
	}
	return false
}

// PortStats is one msg="port stats" record (the command-line contract).
type PortStats struct {
	Port                 string
	RxPackets, RxBytes   uint64
	TxPackets, TxBytes   uint64
	Drops                map[string]uint64 // drop_<reason> attributes, by reason
	missingCounterFields []string
}

func (p PortStats) String() string {
	return fmt.Sprintf("%s rx_packets=%d rx_bytes=%d tx_packets=%d tx_bytes=%d drops=%v",
		p.Port, p.RxPackets, p.RxBytes, p.TxPackets, p.TxBytes, p.Drops)
}

// Missing lists the counters the record lacks (rx_packets, rx_bytes,
// tx_packets, tx_bytes); they read as 0.
func (p PortStats) Missing() []string { return p.missingCounterFields }

// PortStatsRecords returns every msg="port stats" record of port, in log order.
func PortStatsRecords(recs []LogRecord, port string) []PortStats {
	var out []PortStats
	for _, r := range recs {
		if r.Msg() != "port stats" || r.String("port") != port {
			continue
		}
		p := PortStats{Port: port, Drops: map[string]uint64{}}
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

// CounterMpps is the backend's own packet rate over a window delimited by
// two SIGUSR1-triggered "port stats" records of port: records n and n+1
// (counted from 1), dt apart; rx_packets, or tx_packets when tx is set.
// Rounded to 3 decimals; NaN when either record is missing (or lacks the counter) or dt <= 0.
func CounterMpps(log []byte, port string, tx bool, n int, dt time.Duration) float64 {
	recs, _ := ParseJSONLog(log)
	var vals []uint64
	field := "rx_packets"
	if tx {
		field = "tx_packets"
	}
	for _, r := range recs {
		if r.Msg() != "port stats" || r.String("port") != port {
			continue
		}
		if v, ok := r.Uint(field); ok { // a record without the counter is skipped, as sed did
			vals = append(vals, v)
		}
	}
	if n < 1 || n+1 > len(vals) || dt <= 0 || vals[n] < vals[n-1] {
		return math.NaN()
	}
	mpps := float64(vals[n]-vals[n-1]) / (float64(dt) / float64(time.Microsecond))
	return math.Round(mpps*1000) / 1000 // 3 decimals, as the figure is printed
}
