package qemu

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/arcnet/vhost-arcnet/test/backend"
)

// Line is one line of a guest's serial console (or of QEMU's stderr): At is
// the time since QEMU was started, Text the line without its end.
type Line = backend.Line

// Record is one machine-readable line the guest's /init printed:
// "GUEST-<Tag> key=value ... word ...".
type Record struct {
	At   time.Duration     // since QEMU was started
	Tag  string            // e.g. "NIC", "IP", "STATS", "RESULT"
	Args []string          // the words without "=", in order (e.g. RESULT: "FAIL", "ping", "10.0.2.2")
	KV   map[string]string // the key=value words
}

// recordPrefix starts every machine-readable guest line.
const recordPrefix = "GUEST-"

// ParseRecord parses a console line that holds a guest record. Text before
// "GUEST-" is skipped (a kernel message may have been printed on the same
// line); ok is false for lines without a record.
func ParseRecord(line string) (r Record, ok bool) {
	i := strings.Index(line, recordPrefix)
	if i < 0 {
		return Record{}, false
	}
	fields := strings.Fields(line[i+len(recordPrefix):])
	if len(fields) == 0 || !isKey(fields[0], true) {
		return Record{}, false
	}
	r.Tag = fields[0]
	for _, f := range fields[1:] {
		if k, v, found := strings.Cut(f, "="); found && isKey(k, false) {
			if r.KV == nil {
				r.KV = make(map[string]string)
			}
			r.KV[k] = v
			continue
		}
		r.Args = append(r.Args, f)
	}
	return r, true
}

// isKey reports whether s is a record tag (upper) or key (lower): letters,
// digits and '_', starting with a letter.
func isKey(s string, upper bool) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case upper && c >= 'A' && c <= 'Z', !upper && c >= 'a' && c <= 'z':
		case i > 0 && (c >= '0' && c <= '9' || c == '_'):
		default:
			return false
		}
	}
	return true
}

// Get returns the value of key ("" when absent).
func (r Record) Get(key string) string { return r.KV[key] }

// Uint returns the value of key as a number; an absent or malformed value is
// an error.
func (r Record) Uint(key string) (uint64, error) {
	v, ok := r.KV[key]
	if !ok {
		return 0, fmt.Errorf("GUEST-%s has no %s", r.Tag, key)
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("GUEST-%s %s=%q: %w", r.Tag, key, v, err)
	}
	return n, nil
}

// String returns the record in its console form, with the key=value words
// sorted by key after the other words.
func (r Record) String() string {
	parts := append([]string{recordPrefix + r.Tag}, r.Args...)
	keys := make([]string, 0, len(r.KV))
	for k := range r.KV {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, k+"="+r.KV[k])
	}
	return strings.Join(parts, " ")
}

// Console is what a finished guest run left: every console line, the
// records among them, and how QEMU ended.
type Console struct {
	Lines    []Line
	Records  []Record
	ExitErr  error // QEMU's exit status (nil: exit 0)
	TimedOut bool  // the harness killed QEMU at the run's timeout
}

// First returns the first record with tag.
func (c *Console) First(tag string) (Record, bool) {
	for _, r := range c.Records {
		if r.Tag == tag {
			return r, true
		}
	}
	return Record{}, false
}

// Last returns the last record with tag.
func (c *Console) Last(tag string) (Record, bool) {
	for i := len(c.Records) - 1; i >= 0; i-- {
		if c.Records[i].Tag == tag {
			return c.Records[i], true
		}
	}
	return Record{}, false
}

// All returns every record with tag, in order.
func (c *Console) All(tag string) []Record {
	var out []Record
	for _, r := range c.Records {
		if r.Tag == tag {
			out = append(out, r)
		}
	}
	return out
}

// Result returns the guest's verdict: "PASS", "FAIL <reason>", or a
// description of why there is none.
func (c *Console) Result() string {
	r, ok := c.First("RESULT")
	switch {
	case ok:
		return strings.Join(r.Args, " ")
	case c.TimedOut:
		return "no GUEST-RESULT: timed out"
	default:
		return fmt.Sprintf("no GUEST-RESULT: QEMU exited (%v)", c.ExitErr)
	}
}

// Passed reports whether the guest printed GUEST-RESULT PASS and QEMU
// exited cleanly.
func (c *Console) Passed() bool {
	return c.Result() == "PASS" && c.ExitErr == nil && !c.TimedOut
}

// Stats returns the guest's last GUEST-STATS counter (e.g. "rx_packets").
func (c *Console) Stats(counter string) (uint64, error) {
	r, ok := c.Last("STATS")
	if !ok {
		return 0, fmt.Errorf("guest printed no GUEST-STATS")
	}
	return r.Uint(counter)
}

// Tail returns the last n console lines as text, for failure reports.
func (c *Console) Tail(n int) string {
	return backend.TailLines(c.Lines, n)
}
