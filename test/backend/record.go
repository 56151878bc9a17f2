package backend

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Record is one JSON log record of vhost-arcnet (--log-format json).
type Record map[string]any

// ParseRecord decodes one log line (numbers stay json.Number); ok is false
// for a line that is not a JSON object (a panic, a Go runtime message).
func ParseRecord(line string) (r Record, ok bool) {
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	if dec.Decode(&r) != nil || r == nil {
		return nil, false
	}
	return r, true
}

// Msg returns the record's message.
func (r Record) Msg() string { return r.String("msg") }

// String returns the value of key if it is a string ("" otherwise).
func (r Record) String(key string) string { s, _ := r[key].(string); return s }

// Uint returns the value of key if it is a non-negative integer.
func (r Record) Uint(key string) (uint64, bool) {
	n, ok := r[key].(json.Number)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(n.String(), 10, 64)
	return v, err == nil
}

// Num returns the value of key if it is a non-negative integer, else 0: a
// counter the record does not have reads as 0.
func (r Record) Num(key string) uint64 { v, _ := r.Uint(key); return v }

// PortStats is one msg="port stats" record: the switch's view of a port
// (for a guest port, rx = frames the guest transmitted, tx = frames the
// backend wrote into the guest's RX queue).
type PortStats struct {
	Port      string
	RxPackets uint64
	RxBytes   uint64
	TxPackets uint64
	TxBytes   uint64
	Drops     map[string]uint64 // drop_<reason> counters, by reason
}

// ParsePortStats reads a msg="port stats" record; a record without its port
// or one of the four counters is an error.
func ParsePortStats(r Record) (PortStats, error) {
	s := PortStats{Port: r.String("port"), Drops: map[string]uint64{}}
	if s.Port == "" {
		return s, fmt.Errorf("port stats record without port: %v", r)
	}
	for key, dst := range map[string]*uint64{
		"rx_packets": &s.RxPackets, "rx_bytes": &s.RxBytes,
		"tx_packets": &s.TxPackets, "tx_bytes": &s.TxBytes,
	} {
		v, ok := r.Uint(key)
		if !ok {
			return s, fmt.Errorf("port stats of %s: no %s: %v", s.Port, key, r)
		}
		*dst = v
	}
	for k := range r {
		if reason, ok := strings.CutPrefix(k, "drop_"); ok {
			if v, ok := r.Uint(k); ok {
				s.Drops[reason] = v
			}
		}
	}
	return s, nil
}

// Line is one line a process printed, with the time since it started.
type Line struct {
	At   time.Duration
	Text string
}

// TailLines returns the last n lines as text ("  1.234s | text"), for
// failure reports.
func TailLines(lines []Line, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%7.3fs | %s\n", l.At.Seconds(), l.Text)
	}
	return b.String()
}

// ExitString is a process's exit error as text: "0" for nil.
func ExitString(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}
