//go:build linux

package qemu

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Issue 16: live migration end to end. A guest on port A (socket a.sock) of
// one vhost-arcnet pings the gateway every 10 ms (its own clock, arcnet-udp
// -ping) while QEMU migrates it over a unix socket to a second QEMU started
// with -incoming on socket b.sock of the same vhost-arcnet. The guest keeps
// its MAC and lease and its ping stream loses at most a few requests; the
// destination's SEND_RARP moves the MAC to port B at once (the source QEMU
// stays connected, paused, until the end: with its port still attached,
// only the move makes the replies reach B; the MAC table's ageing is
// 300 s).
//
// Both QEMUs are 10.0 (test/deps.sh unpacks it from bookworm-backports):
// Debian's QEMU 7.2 corrupts a guest migrated while a vhost-user backend
// writes its RX buffers (DPDK's vhost library too), 10.0 does not.

// migrationMaxLost bounds the ping requests the guest may lose across the
// switchover: those in flight when the source stops, and those the guest
// sends before the destination's announcement reaches vhost-arcnet.
const migrationMaxLost = 25

func TestLiveMigration(t *testing.T) {
	t.Parallel()
	emu := QEMU10(t)
	env := NewEnv(t, 2)
	env.RequireBackend()
	sockA, sockB := env.Path("a.sock"), env.Path("b.sock")
	qmpA, qmpB, mig := env.Path("qmp-a.sock"), env.Path("qmp-b.sock"), env.Path("migrate.sock")
	be := env.StartBackend("migration", "--socket", sockA, "--socket", sockB)
	cfg := GuestConfig{
		Name: "source",
		Net:  VhostUserNet{Socket: sockA},
		// pingstream: 800 requests, 10 ms apart; the migration starts
		// about 2 s into it.
		Test:     "dhcp,ping,wait:go,pingstream:@gw:8:10,renew,ping,stats,wait:done",
		MAC:      "52:54:00:ac:16:01",
		Timeout:  guestTimeout,
		Emulator: emu,
		Extra:    QMPArgs(qmpA),
	}
	src := env.StartGuest(cfg)
	require.NoError(t, src.AwaitWait("go", stepTimeout))
	ipRec, err := src.WaitRecord(func(r Record) bool { return r.Tag == "IP" }, 0)
	require.NoError(t, err)
	ip := ipRec.Get("ip")
	require.NotEmpty(t, ip)

	dcfg := cfg
	dcfg.Name, dcfg.Net = "destination", VhostUserNet{Socket: sockB}
	dcfg.Extra = append(QMPArgs(qmpB), "-incoming", "unix:"+mig)
	dst := env.StartGuest(dcfg)
	// The destination connects to port B and waits for the migration.
	_, err = be.WaitStats(func(s map[string]PortStats) bool { _, ok := s["guest1"]; return ok }, 20*time.Second)
	require.NoError(t, err, "the destination QEMU did not connect to b.sock")
	qa, err := DialQMP(qmpA, 15*time.Second)
	require.NoError(t, err)
	defer qa.Close()
	qb, err := DialQMP(qmpB, 15*time.Second)
	require.NoError(t, err)
	defer qb.Close()

	require.NoError(t, src.Wake("go"))
	_, err = src.WaitRecord(func(r Record) bool { return r.Tag == "PINGSTREAM" && len(r.Args) > 0 && r.Args[0] == "start" }, stepTimeout)
	require.NoError(t, err)
	time.Sleep(2 * time.Second)
	t0 := time.Now()
	_, err = qa.Execute("migrate", map[string]any{"uri": "unix:" + mig}, 10*time.Second)
	require.NoError(t, err)
	var info map[string]any
	for {
		r, err := qa.Execute("query-migrate", nil, 10*time.Second)
		require.NoError(t, err)
		info, _ = r.(map[string]any)
		st, _ := info["status"].(string)
		if st == "completed" {
			break
		}
		require.NotContains(t, []string{"failed", "cancelled"}, st, "migration: %v", info)
		require.Less(t, time.Since(t0), 60*time.Second, "migration did not complete: %v", info)
		time.Sleep(100 * time.Millisecond)
	}
	wall := time.Since(t0)
	downtime, _ := info["downtime"].(float64)
	total, _ := info["total-time"].(float64)
	ram, _ := info["ram"].(map[string]any)
	t.Logf("migration completed in %v (QEMU: total-time %.0f ms, downtime %.0f ms, ram %v)", wall.Round(time.Millisecond), total, downtime, ram)
	r, err := qb.Execute("query-status", nil, 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, "running", r.(map[string]any)["status"], "destination after migration")

	// The rest of the guest's run happens on the destination.
	require.NoError(t, dst.AwaitWait("done", stepTimeout), "the guest did not finish its steps on the destination")
	c := dst.Console()
	ps, ok := c.Last("PINGSTREAM")
	require.True(t, ok)
	lost, err := ps.Uint("lost")
	require.NoError(t, err)
	dup, err := ps.Uint("dup")
	require.NoError(t, err)
	gap, err := strconv.ParseFloat(ps.Get("max_gap_ms"), 64)
	require.NoError(t, err)
	t.Logf("guest's ping stream across the migration: %s", ps)
	fmt.Printf("migration: QEMU downtime %.0f ms, total %.0f ms; guest: lost %d of %s requests (10 ms apart), longest gap between replies %.1f ms (guest clock), dup %d\n",
		downtime, total, lost, ps.Get("sent"), gap, dup)
	require.LessOrEqual(t, lost, uint64(migrationMaxLost), "requests lost across the migration")
	require.Zero(t, dup, "duplicated replies")
	renew, ok := c.Last("RENEW")
	require.True(t, ok)
	require.Equal(t, ip, renew.Get("ip"), "the guest keeps its lease")
	nic, ok := src.Console().First("NIC")
	require.True(t, ok)
	require.Equal(t, cfg.MAC, nic.Get("mac"))

	// vhost-arcnet moved the MAC to port B on the destination's SEND_RARP.
	require.NotEmpty(t, be.Grep("guest announced on this port (SEND_RARP)"), "no SEND_RARP")
	require.NotEmpty(t, be.Grep("switch port's MAC moved to another port (live migration)"))
	st, err := be.Stats()
	require.NoError(t, err)
	t.Logf("backend: guest0 (source) %+v; guest1 (destination) %+v", st["guest0"], st["guest1"])
	require.NotZero(t, st["guest1"].TxPackets, "replies delivered on port B")
	require.NotZero(t, st["guest1"].RxPackets, "requests sent on port B")

	require.NoError(t, dst.Wake("done"))
	dc := dst.Wait()
	require.True(t, dc.Passed(), "guest: %s", dc.Result())
	_, _ = qa.Execute("quit", nil, 5*time.Second)
	stopBackend(t, be, "both guests gone: clean exit")
}
