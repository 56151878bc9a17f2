//go:build linux

package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// QMP is a client of QEMU's machine protocol (QEMU docs/interop/qmp-spec:
// a greeting, qmp_capabilities, then one JSON command per line answered by
// "return" or "error"; asynchronous "event" lines come in between).
type QMP struct {
	conn net.Conn
	r    *bufio.Reader
	// Events are the events read so far, oldest first.
	Events []map[string]any
}

// QMPArgs returns the QEMU arguments of a QMP server on the unix socket
// path (QEMU creates it and does not wait for a client).
func QMPArgs(path string) []string {
	return []string{"-qmp", "unix:" + path + ",server=on,wait=off"}
}

// DialQMP connects to the QMP socket at path, retrying until timeout
// (QEMU creates it while it starts), and negotiates capabilities.
func DialQMP(path string, timeout time.Duration) (*QMP, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	var err error
	for {
		if conn, err = net.Dial("unix", path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("qmp %s: %w", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	q := &QMP{conn: conn, r: bufio.NewReader(conn)}
	if _, err := q.read(timeout); err != nil { // the greeting
		conn.Close()
		return nil, fmt.Errorf("qmp %s greeting: %w", path, err)
	}
	if _, err := q.Execute("qmp_capabilities", nil, timeout); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }

func (q *QMP) read(timeout time.Duration) (map[string]any, error) {
	_ = q.conn.SetReadDeadline(time.Now().Add(timeout))
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, fmt.Errorf("qmp: %w in %q", err, line)
	}
	return m, nil
}

// Execute runs command with args and returns its "return" value; a QMP
// "error" answer is an error.
func (q *QMP) Execute(command string, args map[string]any, timeout time.Duration) (any, error) {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	_ = q.conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		m, err := q.read(timeout)
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		if _, ok := m["event"]; ok {
			q.Events = append(q.Events, m)
			continue
		}
		if e, ok := m["error"]; ok {
			return nil, fmt.Errorf("qmp %s: %v", command, e)
		}
		return m["return"], nil
	}
}
