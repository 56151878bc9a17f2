//go:build linux

package services

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// crashSubnet holds the leases of the documents the writer child writes.
var crashSubnet = netip.MustParsePrefix("10.0.0.0/16")

// crashLeaseDoc is a lease file of n bound leases in crashSubnet, as
// leaseDB.marshal lays it out (about 170 bytes a lease).
func crashLeaseDoc(t testing.TB, n int) []byte {
	f := leaseFile{Version: leaseFileVersion, Leases: []leaseFileRecord{}}
	exp := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, 0, byte((i + 2) >> 8), byte(i + 2)})
		f.Leases = append(f.Leases, leaseFileRecord{
			MAC: fmt.Sprintf("52:54:00:00:%02x:%02x", byte(i>>8), byte(i)), Addr: a.String(),
			Hostname: fmt.Sprintf("guest-%d", i), State: LeaseBound.String(), Expires: exp,
		})
	}
	b, err := json.MarshalIndent(&f, "", "  ")
	require.NoError(t, err)
	return b
}

// Sizes of the two documents the child alternates between.
const crashOld, crashNew = 1500, 2500

// TestLeaseWriterChild is the child of TestLeaseFileKilledMidWrite: with
// ARCNET_LEASE_CHILD=PATH it replaces PATH with the two documents in turn
// (writeFileAtomic, the lease writer's write) until it is killed.
func TestLeaseWriterChild(t *testing.T) {
	path := os.Getenv("ARCNET_LEASE_CHILD")
	if path == "" {
		t.Skip("the child of TestLeaseFileKilledMidWrite")
	}
	docs := [2][]byte{crashLeaseDoc(t, crashOld), crashLeaseDoc(t, crashNew)}
	for i := 0; ; i++ {
		if err := writeFileAtomic(path, docs[i%2]); err != nil {
			fmt.Println("error", err)
			os.Exit(3)
		}
		if i == 0 {
			fmt.Println("writing")
		}
	}
}

// TestLeaseFileKilledMidWrite (issue 13, "Restart"): a process that keeps
// rewriting the lease file is killed with SIGKILL at a random moment, over
// and over. Each time the file holds one of the two documents whole, never
// a mix or a truncation, and a gateway loads every lease of it; the
// temporary file a kill leaves behind is removed by the next start.
func TestLeaseFileKilledMidWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes in a loop")
	}
	old, cur := crashLeaseDoc(t, crashOld), crashLeaseDoc(t, crashNew)
	require.Greater(t, len(old), 200<<10, "documents large enough to take a while to write")
	dir := t.TempDir()
	path := filepath.Join(dir, "leases.json")
	rounds := 25
	if raceEnabled {
		rounds = 6 // one goroutine a process: the race detector adds only time
	}
	seen := map[int]int{}
	temps := 0
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestLeaseWriterChild$", "-test.count", "1")
		cmd.Env = append(os.Environ(), "ARCNET_LEASE_CHILD="+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "writing\n" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child: %q %v", line, err)
		}
		time.Sleep(time.Duration(rand.IntN(40_000)) * time.Microsecond)
		require.NoError(t, cmd.Process.Kill())
		err = cmd.Wait()
		require.ErrorContains(t, err, "signal: killed")

		b, err := os.ReadFile(path)
		require.NoError(t, err)
		n := -1
		switch {
		case bytes.Equal(b, old):
			n = crashOld
		case bytes.Equal(b, cur):
			n = crashNew
		default:
			t.Fatalf("round %d: the lease file is neither document (%d bytes; %d and %d whole)", round, len(b), len(old), len(cur))
		}
		seen[n]++
		if len(leaseTemps(t, dir)) > 0 {
			temps++
		}
		g, err := NewGateway(Config{Subnet: crashSubnet, LeaseFile: path, Logger: quietLog, DNSUpstreams: noUpstream})
		require.NoError(t, err)
		require.Len(t, g.Leases(), n)
		require.NoError(t, g.Close())
		require.Empty(t, leaseTemps(t, dir), "a temporary file of the killed writer is left after a start")
	}
	t.Logf("%d kills: file held %d leases %d times, %d leases %d times; a temporary file was left %d times",
		rounds, crashOld, seen[crashOld], crashNew, seen[crashNew], temps)
}

// leaseTemps lists the lease writer's temporary files in dir.
func leaseTemps(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			out = append(out, e.Name())
		}
	}
	return out
}
