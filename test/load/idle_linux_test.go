package load

import (
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestIdleOneCPU: a backend confined to one CPU (taskset; Go's default is
// then one P) with guests attached and no traffic uses no CPU, like
// TestMemory's backend on every CPU: each queue worker sleeps in poll(2) on
// its kick, Go's sysmon takes the P of a sleeper back once and then, with
// every P idle, sleeps too.
//
//	go test -run TestIdleOneCPU -v ./test/load/
func TestIdleOneCPU(t *testing.T) {
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("no taskset (util-linux)")
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	cpu := 0
	for !set.IsSet(cpu) {
		cpu++
	}
	b := startBackendWrapped(t, nil, []string{"taskset", "-c", strconv.Itoa(cpu)})

	const n = 4
	guests := newGuests(t, 0x31, n)
	parallel(t, guests, func(g *guest) error { return g.attach(b.sock, loadQueue) })
	if t.Failed() {
		return
	}
	// attach ran DHCP: every guest's workers have had frames, gone
	// through their spin and slept before the idle window.
	parallel(t, guests, func(g *guest) error { return g.quiesce(2 * time.Second) })

	const idleFor = 3 * time.Second
	c0 := b.cpuTicks()
	time.Sleep(idleFor)
	ticks := b.cpuTicks() - c0
	t.Logf("CPU while idle on CPU %d with %d guests attached: %d ticks (1/100 s) in %v", cpu, n, ticks, idleFor)
	if ticks > 6 { // 2 % of a core, as TestMemory allows
		t.Errorf("idle process used %d ticks of CPU in %v", ticks, idleFor)
	}
}
