package xdp

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// reservedPortsFile is the network namespace's net.ipv4.ip_local_reserved_ports.
const reservedPortsFile = "/proc/sys/net/ipv4/ip_local_reserved_ports"

// portReservation is the NAT's port range reserved on the host: the kernel
// picks no ephemeral port from it for the host's own sockets (connect,
// bind to port 0), so they never collide with NAT flows.
type portReservation struct {
	f      *os.File // the sysctl, bound to the namespace it was opened in
	lo, hi uint16
	added  portSet // the ports of the range that were not reserved before
}

// reservePorts adds lo..hi to the reserved ports.
// The file stays open until release, so that release changes the list of
// the same network namespace whichever thread runs it.
func reservePorts(lo, hi uint16) (*portReservation, error) {
	f, err := os.OpenFile(reservedPortsFile, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening net.ipv4.ip_local_reserved_ports: %w", err)
	}
	cur, err := readReserved(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	r := &portReservation{f: f, lo: lo, hi: hi}
	for x := uint32(lo); x <= uint32(hi); x++ {
		if !cur.has(uint16(x)) {
			r.added.add(uint16(x), uint16(x))
		}
	}
	cur.add(lo, hi)
	if err := writeReserved(f, cur); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
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
	return writeReserved(r.f, cur)
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
