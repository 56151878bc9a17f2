package services

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// leaseFileVersion is the format version of the lease file.
const leaseFileVersion = 1

// leaseFile is the JSON document kept at Config.LeaseFile.
type leaseFile struct {
	Version int               `json:"version"`
	Leases  []leaseFileRecord `json:"leases"`
}

type leaseFileRecord struct {
	MAC      string    `json:"mac,omitempty"`
	Addr     string    `json:"addr"`
	Hostname string    `json:"hostname,omitempty"`
	State    string    `json:"state"`
	Expires  time.Time `json:"expires"`
}

// marshal returns the lease file contents for the current table. Offers
// are not persisted: they are held for a minute only.
func (db *leaseDB) marshal() ([]byte, error) {
	f := leaseFile{Version: leaseFileVersion, Leases: []leaseFileRecord{}}
	for _, l := range db.leases() {
		if l.State == LeaseOffered {
			continue
		}
		r := leaseFileRecord{Addr: l.Addr.String(), Hostname: l.Hostname, State: l.State.String(), Expires: l.Expires.UTC()}
		if l.MAC != nil {
			r.MAC = l.MAC.String()
		}
		f.Leases = append(f.Leases, r)
	}
	return json.MarshalIndent(&f, "", "  ")
}

// load fills an empty table from the lease file at path. A missing file is
// an empty table. Records that no longer fit the configuration (another
// subnet, an address now reserved for another MAC, duplicates) are skipped
// and counted in skipped.
func (db *leaseDB) load(path string) (skipped int, err error) {
	removeStaleTemps(path)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read lease file: %w", err)
	}
	var f leaseFile
	if err := json.Unmarshal(b, &f); err != nil {
		return 0, fmt.Errorf("lease file %s: %w (remove it to start with no leases)", path, err)
	}
	if f.Version != leaseFileVersion {
		return 0, fmt.Errorf("lease file %s: version %d, want %d", path, f.Version, leaseFileVersion)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	for _, r := range f.Leases {
		if !db.loadRecord(r) {
			skipped++
		}
	}
	db.gen.Add(1)
	return skipped, nil
}

func (db *leaseDB) loadRecord(r leaseFileRecord) bool {
	addr, err := netip.ParseAddr(r.Addr)
	if err != nil || db.byIP[addr] != nil {
		return false
	}
	st, ok := parseLeaseState(r.State)
	if !ok || st == LeaseOffered {
		return false
	}
	if st == LeaseDeclined {
		if !db.s.subnet.Contains(addr) {
			return false
		}
		db.byIP[addr] = &lease{addr: addr, state: st, expires: r.Expires}
		return true
	}
	hw, err := net.ParseMAC(r.MAC)
	if err != nil || len(hw) != 6 {
		return false
	}
	var mac [6]byte
	copy(mac[:], hw)
	if db.byMAC[mac] != nil || !db.assignable(addr, mac) {
		return false
	}
	if res, ok := db.res[mac]; ok && res != addr {
		return false
	}
	l := &lease{mac: mac, addr: addr, hostname: sanitizeHostname(r.Hostname), state: st, expires: r.Expires}
	db.byIP[addr] = l
	db.byMAC[mac] = l
	if st == LeaseBound && l.hostname != "" {
		if o := db.byName[l.hostname]; o == nil || o.expires.Before(l.expires) {
			db.byName[l.hostname] = l
		}
	}
	return true
}

// leaseTempPrefix is how writeFileAtomic's temporary files for path begin.
func leaseTempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// removeStaleTemps removes the temporary files a writer killed between its
// create and its rename left next to path (the lease file itself is whole:
// writeFileAtomic). At start only: one process owns a lease file.
func removeStaleTemps(path string) {
	dir, prefix := filepath.Dir(path), leaseTempPrefix(path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), prefix) {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// writeFileAtomic replaces path with data so that a reader (or a restart
// after a crash) sees either the old or the new contents, never a mix: the
// data goes to a temporary file in the same directory, is fsynced, renamed
// over path, and the directory is fsynced so the rename itself is durable.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, leaseTempPrefix(path)+"*")
	if err != nil {
		return fmt.Errorf("create temporary lease file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename lease file: %w", err)
	}
	// The rename is durable only once the directory is synced. Some file
	// systems refuse fsync on directories; the data is safe either way.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
