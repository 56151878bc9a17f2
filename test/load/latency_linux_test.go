package load

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/test/backend"
	"github.com/arcnet/vhost-arcnet/test/dpdk"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// BenchmarkPingPong measures the round trip of one frame in flight (issue
// 14) between Go frontends (vhostuser/vhostusertest, in the test process)
// and a backend process:
//
//   - loopback: one guest, vhost-arcnet --uplink loopback sends each frame
//     back (MACs swapped): a round trip is guest -> backend -> guest;
//   - switch: two guests on --uplink none (each leased by DHCP, so the
//     switch's anti-spoofing lets them send), A sends a 64-byte UDP frame to
//     B, B sends it back: a round trip is two guest-to-guest traversals
//     through the switch, so one traversal is about half of it;
//   - dpdk: the loopback case against DPDK's vhost library instead
//     (dpdk-testpmd --vdev net_vhost0, --forward-mode=macswap
//     --port-topology=loop: every frame back to the guest, MACs swapped),
//     the reference; testpmd busy-polls one CPU, so it is listed under
//     poll. It needs root and dpdk-testpmd (make setup), else it is skipped;
//
// each with vhost-arcnet in its default mode (sleeping on kick eventfds
// after a short spin) and with --poll, and each with frontends that
// busy-poll their receive rings with used buffer notifications off on both
// rings (frontend=spin, as a polling guest driver such as DPDK's virtio
// PMD) or sleep on the receive queue's call eventfd (frontend=wait, as a
// guest taking interrupts). The frontends kick the transmit queue when the
// backend asks (EVENT_IDX). Reported: rtt-p50-us, rtt-p99-us, rtt-p99.9-us
// (microseconds), kicks/rtt (transmit kicks the frontends made per round
// trip: 0 when the backend's workers were awake for every frame),
// be-cpu-us/rtt (the backend process's CPU time per round trip, all its
// threads, from /proc/PID/task/*/schedstat), be-wait-us/rtt and
// fe-wait-us/rtt (the time the backend's threads and the test process's
// threads were runnable but waited for a CPU, per round trip: crowding,
// such as woken frontends waiting for spinning workers) and
// be-busy-threads (how many backend threads were on a CPU at least a tenth
// of the run: the workers, and any other thread, such as Go's scheduler
// spinning, that takes a CPU).
//
//	go test -run '^$' -bench PingPong -benchtime 3000x ./test/load/
//
// On a 2-core machine shared with other work the percentiles move with the
// load (a spinning frontend or backend that loses its CPU for a time slice
// adds milliseconds): compare cases of one run, and read kicks/rtt and
// be-cpu-us/rtt, which move less.
func BenchmarkPingPong(b *testing.B) {
	for _, mode := range []string{"eventfd", "poll"} {
		for _, path := range []string{"loopback", "switch", "dpdk"} {
			if path == "dpdk" && mode != "poll" {
				continue
			}
			for _, fe := range []string{"spin", "wait"} {
				b.Run(path+"/"+mode+"/frontend="+fe, func(b *testing.B) {
					var be pingBackend
					switch path {
					case "dpdk":
						be = startTestpmdVhost(b)
					default:
						args := []string{"--uplink", "none"}
						if path == "loopback" {
							args = []string{"--uplink", "loopback"}
						}
						if mode == "poll" {
							args = append(args, "--poll")
						}
						be = startPingArcnet(b, args)
					}
					pingPong(b, be, path == "switch", fe == "wait")
				})
			}
		}
	}
}

// pingBackend is the process a ping-pong runs against.
type pingBackend struct {
	sock string
	pid  int
}

func startPingArcnet(b *testing.B, args []string) pingBackend {
	dir := backend.WorkDir(b, "arcnet-lat-", "LOAD_KEEP")
	sock := filepath.Join(dir, "vm.sock")
	args = append([]string{"--socket", sock, "--dns-upstream", "127.0.0.1:9", "--lease-file", "none"}, args...)
	if f := os.Getenv("ARCNET_CPUPROFILE"); f != "" {
		args = append(args, "--cpuprofile", f) // the last run wins
	}
	p := backend.Start(b, backend.Config{Name: "vhost-arcnet", Args: args})
	return pingBackend{sock: sock, pid: p.Pid()}
}

// startTestpmdVhost starts dpdk-testpmd with DPDK's vhost-user backend
// (net_vhost) on a socket in a fresh directory, sending every frame back
// to the guest with its MACs swapped, on the lowest CPU this process may
// use; no hugepages, no PCI, a private --file-prefix and its runtime
// directory in that directory (test/dpdk's harness). It is stopped by PID
// when the benchmark ends.
func startTestpmdVhost(b *testing.B) pingBackend {
	if os.Geteuid() != 0 {
		b.Skip("needs root: dpdk-testpmd's vhost-user device")
	}
	for _, bin := range []string{"dpdk-testpmd", "stdbuf"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Skipf("%s not found: make setup installs it", bin)
		}
	}
	dir := backend.WorkDir(b, "arcnet-lat-dpdk-", "LOAD_KEEP")
	rt := filepath.Join(dir, "rt")
	if err := os.MkdirAll(rt, 0o700); err != nil {
		b.Fatal(err)
	}
	cpus, err := dpdk.CPUs()
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "vhost.sock")
	argv := dpdk.TestpmdOpts{
		Vdev:       "net_vhost0,iface=" + sock + ",queues=1",
		Mode:       "macswap",
		CPU:        cpus[0],
		FilePrefix: "arcnet-lat" + strconv.Itoa(os.Getpid()),
		App:        []string{"--port-topology=loop"},
	}.Argv()
	p, err := dpdk.StartProc("testpmd", filepath.Join(dir, "testpmd.log"), []string{"RUNTIME_DIRECTORY=" + rt}, argv...)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("started testpmd (pid %d): %s", p.Pid(), strings.Join(argv, " "))
	b.Cleanup(func() {
		if _, err := p.Stop(syscall.SIGINT); err != nil {
			b.Logf("testpmd: %v", err)
		}
	})
	if err := dpdk.WaitForwarding(p, 40*time.Second); err != nil {
		b.Fatalf("%v\n%s", err, dpdk.Tail(p.Log(), 30))
	}
	if !dpdk.IsSocket(sock) {
		b.Fatalf("testpmd forwards but %s is no socket\n%s", sock, dpdk.Tail(p.Log(), 30))
	}
	return pingBackend{sock: sock, pid: p.Pid()}
}

func pingPong(b *testing.B, be pingBackend, viaSwitch, wait bool) {
	n := 1
	if viaSwitch {
		n = 2
	}
	guests := newGuests(b, 0x30, n)
	for i := range guests {
		if err := guests[i].connect(be.sock, loadQueue); err != nil {
			b.Fatal(err)
		}
		if viaSwitch {
			if err := guests[i].dhcp(time.Second, 5); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, g := range guests {
		if err := g.quiesce(2 * time.Second); err != nil {
			b.Fatal(err)
		}
	}
	if !wait {
		// A polling driver asks for no used buffer notifications (DPDK's
		// virtio PMD does the same): no call write(2) on the backend's
		// path.
		for _, g := range guests {
			g.f.Ring(0).Driver.DisableInterrupts()
			g.f.Ring(1).Driver.DisableInterrupts()
		}
	}
	a, peer := guests[0], guests[0]
	var there, back []byte
	if viaSwitch {
		peer = guests[1]
		there = a.toPeer(peer, make([]byte, 22)) // 64-byte frames
		back = peer.toPeer(a, make([]byte, 22))
	} else {
		// The loopback uplink bypasses the switch: any addresses do.
		src, dst := netip.MustParseAddr("192.168.127.50"), netip.MustParseAddr("192.168.127.51")
		there = a.ipv4(guestMAC(0x30, 9), src, dst, udp(netip.AddrPortFrom(src, 4000), netip.AddrPortFrom(dst, 9), make([]byte, 22)))
	}
	rtt := make([]time.Duration, 0, b.N)
	hop := func(from, to *guest, fr []byte, t0 time.Time) {
		if err := from.f.AddFrame(0, virtio.NetHdr{}, fr, vhostusertest.LayoutSingle); err != nil {
			b.Fatal(err)
		}
		if err := from.f.Flush(0); err != nil {
			b.Fatal(err)
		}
		for spins := 0; ; spins++ {
			if _, ok := to.f.Recv(); ok {
				break
			}
			if wait {
				if _, err := to.f.WaitCall(0); err != nil { // receiveq 0
					b.Fatalf("frame %d: %v", len(rtt), err)
				}
			}
			if spins&1023 == 1023 && time.Since(t0) > 5*time.Second {
				b.Fatalf("frame %d not received within 5 s", len(rtt))
			}
		}
		from.f.TxDone(0)
	}
	kicks := func() (k uint64) {
		for _, g := range guests {
			k += g.f.Kicks(1) // transmitq 0
		}
		return k
	}
	k0 := kicks()
	be0, fe0 := readThreadTimes(be.pid), readThreadTimes(os.Getpid())
	t0 := time.Now()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		hop(a, peer, there, t0)
		if viaSwitch {
			hop(peer, a, back, t0)
		}
		rtt = append(rtt, time.Since(t0))
	}
	b.StopTimer()
	k1 := kicks()
	be1, fe1 := readThreadTimes(be.pid), readThreadTimes(os.Getpid())
	wall := time.Since(t0)
	slices.Sort(rtt)
	q := func(f float64) float64 { return float64(rtt[min(len(rtt)-1, int(f*float64(len(rtt))))]) / 1e3 }
	b.ReportMetric(q(0.5), "rtt-p50-us")
	b.ReportMetric(q(0.99), "rtt-p99-us")
	b.ReportMetric(q(0.999), "rtt-p99.9-us")
	b.ReportMetric(float64(k1-k0)/float64(b.N), "kicks/rtt")
	perRTT := func(d time.Duration) float64 { return float64(d) / 1e3 / float64(b.N) }
	beRun, beWait, busy := be1.since(be0, wall/10)
	_, feWait, _ := fe1.since(fe0, wall/10)
	b.ReportMetric(perRTT(beRun), "be-cpu-us/rtt")
	b.ReportMetric(perRTT(beWait), "be-wait-us/rtt")
	b.ReportMetric(perRTT(feWait), "fe-wait-us/rtt")
	b.ReportMetric(float64(busy), "be-busy-threads")
}

// threadTimes maps each live thread of a process to its on-CPU and
// run-queue wait times (/proc/PID/task/TID/schedstat).
type threadTimes map[int][2]time.Duration

func readThreadTimes(pid int) threadTimes {
	tt := threadTimes{}
	files, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	for _, f := range files {
		tid, err := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if err != nil {
			continue
		}
		buf, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if run, wait, ok := dpdk.ParseSchedstat(string(buf)); ok {
			tt[tid] = [2]time.Duration{run, wait}
		}
	}
	return tt
}

// since returns the on-CPU and run-queue wait time the process's threads
// added since before (threads born since count from 0; threads gone are
// not counted), and how many threads ran for at least busy of it.
func (tt threadTimes) since(before threadTimes, busy time.Duration) (run, wait time.Duration, nbusy int) {
	for tid, t := range tt {
		r, w := t[0]-before[tid][0], t[1]-before[tid][1]
		run += r
		wait += w
		if r >= busy {
			nbusy++
		}
	}
	return run, wait, nbusy
}

// processCPU returns the CPU time process pid's live threads have run
// (test/dpdk's SchedStat: /proc/PID/task/*/schedstat). Threads that have
// exited are not counted; Go and testpmd keep theirs.
func processCPU(pid int) time.Duration {
	run, _ := dpdk.SchedStat(pid, 0)
	return run
}
