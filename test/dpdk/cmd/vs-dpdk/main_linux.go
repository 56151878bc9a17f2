//go:build linux

package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/arcnet/vhost-arcnet/test/dpdk"
	"golang.org/x/sys/unix"
)

const (
	readyTimeout = 30 * time.Second       // the backend's socket (and msg="listening")
	stopTimeout  = 5 * time.Second        // SIGINT, then SIGKILL
	readEvery    = 200 * time.Millisecond // the sampling loop's period
	workerComm   = "rte-worker-1"         // testpmd's forwarding lcore 1
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "vs-dpdk: "+format+"\n", args...)
}

func main() {
	// One P: the sampler is one goroutine, and fewer runtime threads compete
	// with the forwarding threads it measures.
	runtime.GOMAXPROCS(1)
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, err := parseFlags(args, os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		logf("%v", err)
		return 1
	}
	if os.Geteuid() != 0 {
		logf("must run as root (DPDK vhost-user, taskset, hugepages)")
		return 1
	}
	for _, c := range [][2]string{
		{"dpdk-testpmd", "Debian 12: dpdk-dev, make setup installs it"},
		{"taskset", "util-linux"},
		{"stdbuf", "coreutils"},
	} {
		if _, err := exec.LookPath(c[0]); err != nil {
			logf("%s not found (%s)", c[0], c[1])
			return 1
		}
	}

	b, err := newBench(cfg)
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer b.cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		b.cleanup()
		os.Exit(130)
	}()
	if err := b.main(); err != nil {
		logf("%v", err)
		return 1
	}
	return 0
}

// bench is one comparison: its work directory, memory set-up and the
// processes it runs.
type bench struct {
	cfg      config
	work     string
	logDir   string
	sock     string
	rt       string // DPDK's runtime directory (RUNTIME_DIRECTORY)
	tag      int    // this process's id: testpmd --file-prefix vsdpdkTAG...
	memFlags []string
	arcnet   string // vhost-arcnet binary, "" when it does not run
	results  *os.File
	runSeq   int

	mountedHuge bool
	hugeAdded   int // 2 MiB pages this program added to nr_hugepages (given back at the end)

	mu       sync.Mutex
	procs    map[*dpdk.Proc]bool
	stopping bool
	once     sync.Once
}

func newBench(cfg config) (*bench, error) {
	work := cfg.work
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("/tmp", "vs-dpdk."); err != nil {
			return nil, err
		}
	}
	b := &bench{
		cfg: cfg, work: work, logDir: filepath.Join(work, "logs"), sock: filepath.Join(work, "vhost.sock"),
		rt: filepath.Join(work, "rt"), tag: os.Getpid(), procs: map[*dpdk.Proc]bool{},
	}
	for _, d := range []string{b.logDir, b.rt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cannot create %s: %w", work, err)
		}
	}
	if b.cfg.hugedir == "" {
		b.cfg.hugedir = filepath.Join(work, "huge")
	}
	return b, nil
}

func (b *bench) main() error {
	var err error
	if b.results, err = os.OpenFile(filepath.Join(b.logDir, "results.txt"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return err
	}
	switch b.cfg.mem {
	case "huge":
		if err := b.setupHuge(); err != nil {
			return err
		}
	default:
		b.memFlags = []string{"--no-huge", "-m", strconv.Itoa(b.cfg.memMB)}
	}
	b.arcnet = b.arcnetBinary()

	kinds := []string{"dpdk"}
	if b.arcnet != "" {
		kinds = append(kinds, b.cfg.modes...)
	}
	c := b.cfg
	logf("work dir %s; cases: %s; kinds: %s; rounds %d; %d s per run; MEM=%s; CPUs be=%d fe=%d",
		b.work, strings.Join(c.cases, " "), strings.Join(kinds, " "), c.rounds, c.dur, c.mem, c.beCPU, c.feCPU)
	fmt.Fprintf(b.results, "# %s cases=%s kinds=%s rounds=%d dur=%d MEM=%s VIRTIO_ARGS=%s\n",
		time.Now().Format("2006-01-02T15:04:05"), strings.Join(c.cases, " "), strings.Join(kinds, " "),
		c.rounds, c.dur, c.mem, c.virtioArgs)
	for _, cs := range c.cases {
		dir, size, packed := parseCase(cs) // checked by parseFlags
		runs := map[string]dpdk.Runs{}
		for r := 1; r <= c.rounds; r++ { // interleaved: dpdk event poll, dpdk event poll, ...
			for _, k := range kinds {
				if b.isStopping() {
					return errors.New("interrupted")
				}
				runs[k] = append(runs[k], b.runOne(k, dir, size, packed, r))
			}
		}
		for _, m := range c.modes {
			name := cs
			if m != "event" {
				name += "-" + m
			}
			var a dpdk.Runs // nil: arcnet columns NA
			if b.arcnet != "" {
				a = runs[m]
			}
			line := dpdk.CaseLine(name, size, a, runs["dpdk"], c.mem) + " like_for_like=" + likeForLike(dir) +
				" arcnet_c2c_ns=" + a.C2CString() + " dpdk_c2c_ns=" + runs["dpdk"].C2CString()
			fmt.Println(line)
			fmt.Fprintln(b.results, line)
		}
	}
	return nil
}

// arcnetBinary is -arcnet-bin, or vhost-arcnet built into the work
// directory; "" when it cannot run (or -dpdk-only).
func (b *bench) arcnetBinary() string {
	if b.cfg.dpdkOnly {
		return ""
	}
	if p := b.cfg.arcnetBin; p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			logf("ARCNET_BIN=%s is not executable", p)
			return ""
		}
		return p
	}
	bin := filepath.Join(b.work, "vhost-arcnet")
	if err := dpdk.BuildArcnet(bin); err != nil {
		_ = os.WriteFile(filepath.Join(b.logDir, "build.log"), []byte(err.Error()+"\n"), 0o644)
		logf("go build ./cmd/vhost-arcnet failed (arcnet columns will be NA):\n%s", dpdk.Tail(err.Error(), 5))
		return ""
	}
	return bin
}

// setupHuge mounts hugetlbfs at the huge directory unless something is
// mounted there, and raises nr_hugepages by what is missing for both
// testpmd processes; cleanup undoes both.
func (b *bench) setupHuge() error {
	dir := b.cfg.hugedir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !isMountpoint(dir) {
		if err := unix.Mount("nodev", dir, "hugetlbfs", 0, "pagesize=2M"); err != nil {
			return fmt.Errorf("cannot mount hugetlbfs at %s: %w", dir, err)
		}
		b.mountedHuge = true
	}
	need := 2*b.cfg.memMB/2 + 16 // 2 MiB pages for both testpmd processes, plus slack
	free, err := meminfo("HugePages_Free")
	if err != nil {
		return err
	}
	if free < need {
		cur, err := readInt(nrHugepages)
		if err != nil {
			return err
		}
		if err := os.WriteFile(nrHugepages, []byte(strconv.Itoa(cur+need-free)), 0o644); err != nil {
			return err
		}
		b.hugeAdded = need - free
		if free, err = meminfo("HugePages_Free"); err != nil || free < need {
			return fmt.Errorf("only %d free 2 MiB hugepages, need %d", free, need)
		}
	}
	b.memFlags = []string{"-m", strconv.Itoa(b.cfg.memMB), "--huge-dir", dir, "--single-file-segments"}
	return nil
}

const nrHugepages = "/proc/sys/vm/nr_hugepages"

func readInt(path string) (int, error) {
	s, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(s)))
}

// meminfo returns a counter of /proc/meminfo.
func meminfo(key string) (int, error) {
	s, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(s), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key+":" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no %s in /proc/meminfo", key)
}

// isMountpoint reports whether something is mounted at dir (/proc/self/mountinfo).
func isMountpoint(dir string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	s, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(s), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == abs {
			return true
		}
	}
	return false
}

// start starts a process the bench stops (or kills, on an interrupt).
func (b *bench) start(name, logPath string, argv []string) (*dpdk.Proc, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopping {
		return nil, errors.New("interrupted")
	}
	p, err := dpdk.StartProc(name, logPath, []string{"RUNTIME_DIRECTORY=" + b.rt}, argv...)
	if err != nil {
		return nil, err
	}
	p.StopTimeout = stopTimeout
	b.procs[p] = true
	return p, nil
}

// stop sends SIGINT, then SIGKILL after stopTimeout.
func (b *bench) stop(p *dpdk.Proc) {
	_, _ = p.Stop(syscall.SIGINT)
	b.mu.Lock()
	delete(b.procs, p)
	b.mu.Unlock()
}

func (b *bench) isStopping() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stopping
}

// cleanup kills what still runs and removes what the bench made (once).
func (b *bench) cleanup() {
	b.once.Do(func() {
		b.mu.Lock()
		b.stopping = true
		for p := range b.procs {
			p.Kill()
		}
		b.mu.Unlock()
		os.RemoveAll(b.rt)
		os.Remove(b.sock)
		if b.cfg.mem == "huge" {
			b.removeHugeFiles()
			if b.mountedHuge {
				_ = unix.Unmount(b.cfg.hugedir, 0)
			}
			if b.hugeAdded > 0 { // give back what we added, not what others hold
				if cur, err := readInt(nrHugepages); err == nil && cur >= b.hugeAdded {
					_ = os.WriteFile(nrHugepages, []byte(strconv.Itoa(cur-b.hugeAdded)), 0o644)
				}
			}
		}
		if !b.cfg.keep {
			os.RemoveAll(b.work)
		} else {
			logf("logs: %s", b.logDir)
		}
	})
}

func (b *bench) removeHugeFiles() {
	files, _ := filepath.Glob(filepath.Join(b.cfg.hugedir, fmt.Sprintf("vsdpdk%d*", b.tag)))
	for _, f := range files {
		os.Remove(f)
	}
}

func (b *bench) result(format string, args ...any) {
	fmt.Fprintf(b.results, format+"\n", args...)
}

// The directions of the cases (parseCase): what each backend does and where
// the figure is read, in runOne.
const (
	dirF2B     = "f2b"      // virtio_user txonly -> net_vhost rxonly | arcnet --uplink sink
	dirF2BCopy = "f2b-copy" // virtio_user txonly -> net_vhost rxonly | arcnet --uplink sink-copy
	dirB2F     = "b2f"      // net_vhost txonly | arcnet --uplink source -> virtio_user rxonly
	dirLoop    = "loop"     // virtio_user flowgen <-> net_vhost io, loop topology | arcnet --uplink loopback
)

// likeForLike says whether both backends do the same work per frame in a
// direction: every one but f2b, where net_vhost copies each frame into an
// mbuf and arcnet's counting sink does not read it.
func likeForLike(dir string) string {
	if dir == dirF2B {
		return "no"
	}
	return "yes"
}

// runOne measures one run: kind dpdk, event or poll; dir one of the dir*
// constants.
func (b *bench) runOne(kind, dir string, size int, packed bool, round int) dpdk.RunResult {
	c := b.cfg
	b.runSeq++
	ringName, virtioArgs := "", c.virtioArgs
	if packed {
		// Packed virtqueues on both sides: virtio_user asks for them,
		// net_vhost offers them by default, vhost-arcnet with
		// --packed-rings.
		ringName, virtioArgs = "-packed", virtioArgs+",packed_vq=1"
	}
	id := fmt.Sprintf("%s-%d%s-%s-r%d", dir, size, ringName, kind, round)
	belog := filepath.Join(b.logDir, id+"-be.log")
	felog := filepath.Join(b.logDir, id+"-fe.log")
	tx, rx, big := dpdk.SizeArgs(size)
	beMode, feMode, uplink := "rxonly", "txonly", "sink"
	feSz, beSz := tx, []string(nil)
	switch dir {
	case dirF2BCopy:
		uplink = "sink-copy"
	case dirB2F:
		beMode, feMode, uplink = "txonly", "rxonly", "source"
		feSz, beSz = rx, tx
	case dirLoop:
		// The frontend sends as fast as it can and counts what comes back
		// (flowgen drains its receive queue every burst; its frames are
		// --txpkts minus 4 bytes of FCS it does not send); the backend
		// sends every frame back on the port it came from.
		tx4, _, _ := dpdk.SizeArgs(size + 4)
		beMode, feMode, uplink = "io", "flowgen", "loopback"
		feSz, beSz = append(tx4, rx...), []string{"--port-topology=loop"}
	}
	var beArgv []string
	if kind == "dpdk" {
		beArgv = dpdk.TestpmdOpts{
			Vdev: "net_vhost0,iface=" + b.sock + ",queues=1" + c.vhostArgs, Mode: beMode, CPU: c.beCPU,
			FilePrefix: fmt.Sprintf("vsdpdk%dbe%d", b.tag, b.runSeq), Taskset: true,
			Mem: b.memFlags, EAL: c.ealBE, Mbufs: 32768, App: append(append([]string{}, big...), beSz...),
		}.Argv()
	} else {
		args := []string{"--uplink", uplink}
		if kind == "poll" {
			args = append(args, "--poll")
		}
		if packed {
			args = append(args, "--packed-rings")
		}
		args = append(args, c.arcnetArgs...)
		if dir == dirB2F {
			args = append(args, "--source-size", strconv.Itoa(size))
		}
		beArgv = append([]string{"taskset", "-c", strconv.Itoa(c.beCPU)}, dpdk.ArcnetArgv(b.arcnet, b.sock, "info", args...)...)
	}
	feArgv := dpdk.TestpmdOpts{
		Vdev: "net_virtio_user0,path=" + b.sock + ",queues=1" + virtioArgs, Mode: feMode, CPU: c.feCPU,
		FilePrefix: fmt.Sprintf("vsdpdk%dfe%d", b.tag, b.runSeq), Taskset: true,
		Mem: b.memFlags, EAL: c.ealFE, Mbufs: 32768, App: append(append([]string{}, big...), feSz...),
	}.Argv()
	// where the figure is read: the receiver's Rx-pps (loop: the frontend's,
	// frames that went both ways), except arcnet f2b: the sender's Tx-pps
	rxlog, key := felog, dpdk.RxPPS
	switch {
	case dir == dirB2F || dir == dirLoop:
	case kind == "dpdk":
		rxlog = belog
	default:
		key = dpdk.TxPPS
	}
	_ = os.WriteFile(filepath.Join(b.logDir, id+"-cmd.txt"),
		[]byte("BE: "+strings.Join(beArgv, " ")+"\nFE: "+strings.Join(feArgv, " ")+"\n"), 0o644)

	// The machine's mode for this run (dpdk.C2CRoundTrip), measured
	// before either process starts.
	c2c, c2cErr := dpdk.C2CRoundTrip(c.beCPU, c.feCPU)
	if c2cErr != nil {
		logf("%s: %v", id, c2cErr)
	}
	os.Remove(b.sock)
	defer func() {
		os.Remove(b.sock)
		if c.mem == "huge" {
			b.removeHugeFiles()
		}
	}()
	be, err := b.start("backend", belog, beArgv)
	if err == nil {
		err = be.WaitFor("its vhost-user socket", readyTimeout, func(log string) bool {
			return dpdk.IsSocket(b.sock) && (kind == "dpdk" || dpdk.Listening(log, b.sock))
		})
		if err != nil {
			b.stop(be)
		}
	}
	if err != nil {
		logf("%s: backend did not come up (%v); %s:", id, err, belog)
		if be != nil {
			fmt.Fprintln(os.Stderr, dpdk.Tail(be.Log(), 5))
		}
		b.result("%s FAILED backend", id)
		return dpdk.FailedRun()
	}

	smp := dpdk.NewSampler(dpdk.FilterConfig{
		Warmup: time.Duration(c.warmup) * time.Second, Want: time.Duration(c.dur) * time.Second,
		Max: time.Duration(c.maxsec) * time.Second, MinShare: c.minshare, Filter: c.filter,
		BusyBackend: kind != "event",
	})
	var ctrN int
	var ctrT1, ctrT2 time.Duration
	fe, err := b.start("frontend", felog, feArgv)
	if err != nil {
		logf("%s: %v", id, err)
	} else {
		ctrN, ctrT1, ctrT2 = b.sample(id, kind, rxlog, key, fe, be, smp)
		time.Sleep(300 * time.Millisecond) // let the backend log the second "port stats" record before it is told to stop
		b.stop(fe)
	}
	b.stop(be)

	res := smp.Result(c.filter)
	res.C2C = c2c
	if kind != "dpdk" && ctrN > 0 && ctrT2 > ctrT1 {
		if log, err := os.ReadFile(belog); err == nil {
			res.CtrMpps = dpdk.CounterMpps(log, "guest0", dir == dirB2F || dir == dirLoop, ctrN, ctrT2-ctrT1)
		}
	}
	fe2, be2, w2 := "0", "0", "0"
	if !res.NoSamples {
		fe2, be2, w2 = dpdk.Fmt(res.FE, 2), dpdk.Fmt(res.BE, 2), dpdk.Fmt(res.Wait, 2)
	}
	mpps, ctr := dpdk.Fmt(res.Mpps, 3), dpdk.Fmt(res.CtrMpps, 3)
	c2cNs := dpdk.Runs{res}.C2CString()
	b.result("%s mpps=%s ctr_mpps=%s clean=%d/%d fe_cpu=%s be_cpu=%s be_wait_steal=%s %s MEM=%s c2c_ns=%s",
		id, mpps, ctr, res.Clean, res.Total, fe2, be2, w2, res.Flag, c.mem, c2cNs)
	logf("%s: %s Mpps (backend counters: %s) clean=%d/%d cpu fe=%s be=%s wait+steal=%s %s c2c=%s ns",
		id, mpps, ctr, res.Clean, res.Total, fe2, be2, w2, res.Flag, c2cNs)
	return res
}

// sample follows the rate lines of key in rxlog and feeds them, with the
// CPU times of both sides, to smp until the run has its samples, a process
// exits or the run's deadline passes. For vhost-arcnet it sends SIGUSR1 at
// the start and at the end of the measured window and returns the number
// of the "port stats" record that starts it and the window's bounds.
func (b *bench) sample(id, kind, rxlog, key string, fe, be *dpdk.Proc, smp *dpdk.Sampler) (ctrN int, ctrT1, ctrT2 time.Duration) {
	c := b.cfg
	lr, err := dpdk.OpenLines(rxlog)
	if err != nil {
		logf("%s: %v", id, err)
		return
	}
	defer lr.Close()
	sf, err := os.Create(filepath.Join(b.logDir, id+"-samples.txt"))
	if err != nil {
		logf("%s: %v", id, err)
		return
	}
	defer sf.Close()
	samples := bufio.NewWriter(sf)
	defer samples.Flush()
	arcnet := kind != "dpdk"
	t0 := time.Now()
	deadline := t0.Add(time.Duration(60+c.warmup+2*c.maxsec) * time.Second)
	var ft, bt int
	for {
		if ft == 0 {
			ft = dpdk.ThreadByName(fe.Pid(), workerComm)
		}
		if !arcnet && bt == 0 {
			bt = dpdk.ThreadByName(be.Pid(), workerComm)
		}
		lines, _ := lr.Next()
		for _, line := range lines {
			pps, ok := dpdk.ParseRateLine(line, key)
			if !ok {
				continue
			}
			r := dpdk.Reading{At: time.Since(t0)}
			if ft != 0 {
				r.FeRun, _ = dpdk.SchedStat(fe.Pid(), ft)
			}
			if arcnet {
				r.BeRun, r.BeWait = dpdk.SchedStat(be.Pid(), 0)
			} else if bt != 0 {
				r.BeRun, r.BeWait = dpdk.SchedStat(be.Pid(), bt)
			}
			r.Steal = dpdk.Steal(c.beCPU)
			st := smp.Add(pps, r)
			if s := st.Sample; s != nil {
				fmt.Fprintln(samples, s)
				if c.verbose {
					fmt.Fprintf(os.Stderr, "  %s sample %d pps=%d clean=%d fe=%d be=%d be_wait+steal=%d (per mille)\n",
						id, s.N, s.PPS, btoi(s.Clean), s.FE, s.BE, s.Wait)
				}
			}
			if st.Done && arcnet {
				_ = be.Signal(syscall.SIGUSR1) // end of the counter window
				ctrT2 = r.At
			}
			if st.BeforeWindow && arcnet {
				// maybe the start of the counter window: the last of these
				// before the first counted sample is (its "port stats"
				// record is number ctrN)
				_ = be.Signal(syscall.SIGUSR1)
				ctrN++
				ctrT1 = r.At
			}
			if st.Done {
				return
			}
		}
		if fe.Exited() || be.Exited() || time.Now().After(deadline) || b.isStopping() {
			logf("%s: run failed after %d samples; logs: %s %s", id, smp.Lines(), be.LogPath, fe.LogPath)
			fmt.Fprintln(os.Stderr, dpdk.Tail(fe.Log(), 5))
			fmt.Fprintln(os.Stderr, dpdk.Tail(be.Log(), 5))
			return
		}
		time.Sleep(readEvery)
	}
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

// config is the command line, each flag defaulting to the shell script's
// environment variable.
type config struct {
	dur, rounds, memMB, warmup, maxsec, beCPU, feCPU int
	cases, modes                                     []string
	mem, hugedir, virtioArgs, vhostArgs              string
	arcnetBin, work                                  string
	ealFE, ealBE, arcnetArgs                         []string
	minshare                                         float64
	filter, dpdkOnly, keep, verbose                  bool
}

// envValue returns environment variable name parsed by parse, or def when
// it is unset or empty; a value parse rejects is recorded in errs ("NAME=value:
// want") and reads as what parse returned.
func envValue[T any](getenv func(string) string, errs *[]error, name string, def T, parse func(string) (T, error), want string) T {
	v := getenv(name)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q: %s", name, v, want))
	}
	return x
}

// parseFlags reads the command line; getenv supplies the defaults.
func parseFlags(args []string, getenv func(string) string, out io.Writer) (config, error) {
	var c config
	var envErrs []error
	str := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	num := func(name string, def int) int {
		return envValue(getenv, &envErrs, name, def, strconv.Atoi, "not an integer")
	}
	boolean := func(name string, def bool) bool {
		return envValue(getenv, &envErrs, name, def, strconv.ParseBool, "want 1 or 0")
	}
	fs := flag.NewFlagSet("vs-dpdk", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintln(out, "usage: vs-dpdk [flags] [SECONDS]   (SECONDS: measured seconds per run, default 5; see go doc ./test/dpdk/cmd/vs-dpdk)")
		fs.PrintDefaults()
	}
	cases := fs.String("cases", str("CASES", "f2b-64 f2b-1518 b2f-64 b2f-1518"), "`LIST` of cases: f2b-SIZE (frontend -> backend; arcnet's sink does not read the frames), f2b-copy-SIZE (the same, arcnet copies every frame), b2f-SIZE (backend -> frontend), loop-SIZE (frontend -> backend -> frontend); a -packed suffix (f2b-1518-packed) runs both backends with packed virtqueues [CASES]")
	modes := fs.String("modes", str("MODES", "event poll"), "`LIST` of vhost-arcnet modes: event (default mode), poll (--poll) [MODES]")
	fs.IntVar(&c.rounds, "rounds", num("ROUNDS", 3), "interleaved rounds per case [ROUNDS]")
	fs.StringVar(&c.mem, "mem", str("MEM", "nohuge"), "frontend memory: nohuge (4 KiB pages, memfd) | huge (2 MiB hugetlbfs) [MEM]")
	fs.IntVar(&c.memMB, "mem-mb", num("MEM_MB", 512), "testpmd memory per process, `MiB` [MEM_MB]")
	fs.StringVar(&c.hugedir, "hugedir", str("HUGEDIR", ""), "hugetlbfs mount point for -mem huge (default WORK/huge) [HUGEDIR]")
	fs.IntVar(&c.warmup, "warmup", num("WARMUP", 2), "`seconds` of samples dropped after the first non-zero one [WARMUP]")
	parseFloat := func(v string) (float64, error) { return strconv.ParseFloat(v, 64) }
	fs.Float64Var(&c.minshare, "minshare", envValue(getenv, &envErrs, "MINSHARE", 0.95, parseFloat, "not a number"),
		"CPU share of each forwarding thread for a clean sample [MINSHARE]")
	fs.BoolVar(&c.filter, "filter", boolean("FILTER", true), "count only clean samples (false: every sample, shares still reported) [FILTER]")
	fs.IntVar(&c.maxsec, "maxsec", num("MAXSEC", 0), "max `seconds` of samples per run after warm-up (default 3*SECONDS) [MAXSEC]")
	fs.IntVar(&c.beCPU, "be-cpu", num("BE_CPU", 0), "backend's CPU [BE_CPU]")
	fs.IntVar(&c.feCPU, "fe-cpu", num("FE_CPU", 1), "frontend's CPU [FE_CPU]")
	fs.StringVar(&c.virtioArgs, "virtio-args", str("VIRTIO_ARGS", ""), "extra virtio_user devargs, e.g. \",mrg_rxbuf=0\" [VIRTIO_ARGS]")
	fs.StringVar(&c.vhostArgs, "vhost-args", str("VHOST_ARGS", ""), "extra net_vhost devargs [VHOST_ARGS]")
	ealFE := fs.String("eal-fe", str("EAL_FE", ""), "extra EAL args of the frontend's testpmd [EAL_FE]")
	ealBE := fs.String("eal-be", str("EAL_BE", ""), "extra EAL args of net_vhost's testpmd [EAL_BE]")
	fs.StringVar(&c.arcnetBin, "arcnet-bin", str("ARCNET_BIN", ""), "vhost-arcnet binary (default: go build ./cmd/vhost-arcnet into WORK) [ARCNET_BIN]")
	arcnetArgs := fs.String("arcnet-args", str("ARCNET_ARGS", ""), "extra vhost-arcnet flags [ARCNET_ARGS]")
	fs.BoolVar(&c.dpdkOnly, "dpdk-only", boolean("DPDK_ONLY", false), "skip vhost-arcnet (arcnet columns NA) [DPDK_ONLY]")
	fs.StringVar(&c.work, "work", str("WORK", ""), "work directory: logs, sockets, DPDK runtime dir (default a new /tmp/vs-dpdk.XXXXXX) [WORK]")
	fs.BoolVar(&c.keep, "keep", boolean("KEEP", true), "keep the work directory (its logs) at the end [KEEP]")
	fs.BoolVar(&c.verbose, "v", boolean("VERBOSE", false), "per-sample lines on stderr [VERBOSE]")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if len(envErrs) > 0 {
		return c, errors.Join(envErrs...)
	}
	c.dur = 5
	switch fs.NArg() {
	case 0:
	case 1:
		n, err := strconv.Atoi(fs.Arg(0))
		if err != nil || n <= 0 {
			return c, fmt.Errorf("SECONDS must be a positive integer, got %q", fs.Arg(0))
		}
		c.dur = n
	default:
		return c, fmt.Errorf("one argument (SECONDS) at most, got %q", fs.Args())
	}
	if c.maxsec == 0 {
		c.maxsec = 3 * c.dur
	}
	c.cases, c.modes = strings.Fields(*cases), strings.Fields(*modes)
	c.ealFE, c.ealBE, c.arcnetArgs = strings.Fields(*ealFE), strings.Fields(*ealBE), strings.Fields(*arcnetArgs)
	for _, cs := range c.cases {
		if dir, n, _ := parseCase(cs); dir == "" || n <= 0 {
			return c, fmt.Errorf("bad case %q (want f2b-SIZE, f2b-copy-SIZE, b2f-SIZE or loop-SIZE, optionally -packed)", cs)
		}
	}
	for _, m := range c.modes {
		if m != "event" && m != "poll" {
			return c, fmt.Errorf("bad mode %q (want event or poll)", m)
		}
	}
	switch {
	case c.mem != "nohuge" && c.mem != "huge":
		return c, errors.New("MEM must be nohuge or huge")
	case c.rounds < 1:
		return c, errors.New("-rounds must be >= 1")
	case c.warmup < 0 || c.maxsec < 0 || c.memMB <= 0:
		return c, errors.New("-warmup and -maxsec must be >= 0, -mem-mb > 0")
	}
	return c, nil
}

// parseCase splits a case, DIR-SIZE[-packed] with DIR one of the dir*
// constants; dir is "" when it is not one.
func parseCase(cs string) (dir string, size int, packed bool) {
	rest, packed := strings.CutSuffix(cs, "-packed")
	i := strings.LastIndexByte(rest, '-')
	if i < 0 {
		return "", 0, false
	}
	d, sz := rest[:i], rest[i+1:]
	n, err := strconv.Atoi(sz)
	switch {
	case err != nil || strings.ContainsAny(sz, "+-"):
		return "", 0, false
	case d == dirF2B || d == dirF2BCopy || d == dirB2F || d == dirLoop:
		return d, n, packed
	}
	return "", 0, false
}
