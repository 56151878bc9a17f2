package dpdk

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// What the comparison reads from /proc without starting a process (a fork
// would take CPU from a forwarding thread and show up as lost share).

// ThreadByName returns the id of the first thread of pid whose comm is name
// (testpmd's forwarding lcore 1 is "rte-worker-1"), or 0.
func ThreadByName(pid int, name string) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(t, "comm"))
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		if tid, err := strconv.Atoi(filepath.Base(t)); err == nil {
			return tid
		}
	}
	return 0
}

// SchedStat returns the on-CPU and run-queue wait times of thread tid of
// pid, or summed over every thread of pid when tid is 0
// (/proc/PID/task/TID/schedstat). Threads that are gone count 0.
func SchedStat(pid, tid int) (run, wait time.Duration) {
	pattern := fmt.Sprintf("/proc/%d/task/*/schedstat", pid)
	if tid != 0 {
		pattern = fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, tid)
	}
	files, _ := filepath.Glob(pattern)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		r, w, ok := ParseSchedstat(string(b))
		if ok {
			run += r
			wait += w
		}
	}
	return run, wait
}

// ParseSchedstat reads one schedstat file: "RUN_NS WAIT_NS TIMESLICES".
func ParseSchedstat(s string) (run, wait time.Duration, ok bool) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return 0, 0, false
	}
	r, err1 := strconv.ParseInt(f[0], 10, 64)
	w, err2 := strconv.ParseInt(f[1], 10, 64)
	return time.Duration(r), time.Duration(w), err1 == nil && err2 == nil
}

// Steal returns the hypervisor's steal time of cpu so far (/proc/stat).
func Steal(cpu int) time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	d, _ := ParseSteal(string(b), cpu)
	return d
}

// ParseSteal returns the steal time of cpu in a /proc/stat: the 8th number
// of its "cpuN" line, in USER_HZ ticks (100 per second on Linux).
func ParseSteal(stat string, cpu int) (time.Duration, bool) {
	prefix := "cpu" + strconv.Itoa(cpu) + " "
	for _, l := range strings.Split(stat, "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 9 {
			return 0, false
		}
		v, err := strconv.ParseInt(f[8], 10, 64)
		return time.Duration(v) * 10 * time.Millisecond, err == nil
	}
	return 0, false
}

// LineReader follows a file that another process appends to, one complete
// line at a time (a partial last line waits for its end).
type LineReader struct {
	f    *os.File
	part []byte
	buf  []byte
}

// OpenLines opens path for following from its start.
func OpenLines(path string) (*LineReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &LineReader{f: f, buf: make([]byte, 64<<10)}, nil
}

// Next returns the complete lines written since the last call, without
// their newlines.
func (r *LineReader) Next() ([]string, error) {
	var lines []string
	for {
		n, err := r.f.Read(r.buf)
		data := r.buf[:n]
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				r.part = append(r.part, data...)
				break
			}
			lines = append(lines, string(append(r.part, data[:i]...)))
			r.part = r.part[:0]
			data = data[i+1:]
		}
		if err == io.EOF || (err == nil && n == 0) {
			return lines, nil
		}
		if err != nil {
			return lines, err
		}
	}
}

// Close closes the file.
func (r *LineReader) Close() error { return r.f.Close() }
