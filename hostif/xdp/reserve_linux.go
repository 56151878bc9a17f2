package xdp

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// reservedPortsFile is the network namespace's net.ipv4.ip_local_reserved_ports.
const reservedPortsFile = "/proc/sys/net/ipv4/ip_local_reserved_ports"

// stateDir keeps, for each network namespace and NIC with a running XDP
// uplink, the ports it added to the reserved list (a file per uplink), so
// that the next start after a crash (SIGKILL: no clean-up ran) takes them
// back. A variable for tests.
var stateDir = "/run/vhost-arcnet"

// portReservation is the NAT's port range reserved on the host: the kernel
// picks no ephemeral port from it for the host's own sockets (connect,
// bind to port 0), so they never collide with NAT flows.
type portReservation struct {
	f      *os.File // the sysctl, bound to the namespace it was opened in
	state  string   // the state file ("": none could be made)
	lo, hi uint16
	added  portSet // the ports of the range that were not reserved before
}

// reservePorts adds lo..hi to the reserved ports of the calling thread's
// network namespace, for the uplink on NIC ifname. Ports a crashed earlier
// uplink on the same NIC left reserved (its state file) count as not
// reserved: they are released with this reservation.
//
// The file stays open until release, so that release changes the list of
// the same network namespace whichever thread runs it.
func reservePorts(lo, hi uint16, ifname string) (*portReservation, error) {
	f, err := os.OpenFile(reservedPortsFile, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening net.ipv4.ip_local_reserved_ports: %w", err)
	}
	cur, err := readReserved(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	r := &portReservation{f: f, lo: lo, hi: hi, state: statePath(ifname)}
	if r.state != "" {
		if b, err := os.ReadFile(r.state); err == nil {
			if left, err := parsePortSet(string(b)); err == nil {
				for x := range 65536 {
					if left.has(uint16(x)) {
						cur.remove(uint16(x))
					}
				}
			}
		}
	}
	for x := uint32(lo); x <= uint32(hi); x++ {
		if !cur.has(uint16(x)) {
			r.added.add(uint16(x), uint16(x))
		}
	}
	cur.add(lo, hi)
	// The state first: a crash between the two writes leaves a state file
	// naming ports perhaps not reserved, which the next start handles.
	if r.state != "" {
		if err := os.WriteFile(r.state, []byte(r.added.String()+"\n"), 0o600); err != nil {
			r.state = ""
		}
	}
	if err := writeReserved(f, cur); err != nil {
		f.Close()
		if r.state != "" {
			os.Remove(r.state)
		}
		return nil, err
	}
	return r, nil
}

// statePath returns the state file of the uplink on ifname in the calling
// thread's network namespace (named by its inode), creating stateDir; ""
// if it cannot.
func statePath(ifname string) string {
	fi, err := os.Stat("/proc/thread-self/ns/net")
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || os.MkdirAll(stateDir, 0o700) != nil {
		return ""
	}
	return filepath.Join(stateDir, fmt.Sprintf("xdp-ports-%d-%s", st.Ino, ifname))
}

// release removes from the reserved ports those of the range that were not
// reserved before; the rest of the list (changes others made meanwhile
// included) stays.
func (r *portReservation) release() error {
	defer r.f.Close()
	cur, err := readReserved(r.f)
	if err != nil {
		return err
	}
	for x := uint32(r.lo); x <= uint32(r.hi); x++ {
		if r.added.has(uint16(x)) {
			cur.remove(uint16(x))
		}
	}
	if err := writeReserved(r.f, cur); err != nil {
		return err
	}
	if r.state != "" {
		os.Remove(r.state)
		os.Remove(stateDir) // only if no other uplink has a file there
	}
	return nil
}

func readReserved(f *os.File) (*portSet, error) {
	b := make([]byte, 1<<16)
	n, err := f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading net.ipv4.ip_local_reserved_ports: %w", err)
	}
	return parsePortSet(strings.TrimSpace(string(b[:n])))
}

func writeReserved(f *os.File, p *portSet) error {
	s := p.String()
	if s == "" {
		s = "\n" // the kernel clears the list on an empty line
	}
	if _, err := f.WriteAt([]byte(s), 0); err != nil {
		return fmt.Errorf("writing net.ipv4.ip_local_reserved_ports: %w", err)
	}
	return nil
}
