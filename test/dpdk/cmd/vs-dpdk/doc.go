// Command vs-dpdk measures vhost-arcnet against DPDK's own vhost-user
// backend, side by side, in one run (issue 15: it replaces the 523 lines of
// bench/vs-dpdk.sh, which is now a wrapper around it).
//
//	go run ./test/dpdk/cmd/vs-dpdk [flags] [SECONDS]     (root; SECONDS measured per run, default 5)
//
// The frontend is always DPDK's virtio_user (dpdk-testpmd --vdev
// net_virtio_user0,path=SOCK), a vhost-user driver that plays the guest
// without a VM. For every case it measures, interleaved (A B C  A B C ...),
// -rounds times:
//
//	A  dpdk:   net_vhost (dpdk-testpmd --vdev net_vhost0,iface=SOCK) as the backend
//	B  event:  vhost-arcnet --socket SOCK (default, eventfd-driven mode)
//	C  poll:   vhost-arcnet --socket SOCK --poll (busy polling)
//
// Cases (-cases), each optionally with a -packed suffix (packed virtqueues:
// virtio_user packed_vq=1, net_vhost offers them by default, arcnet
// --packed-rings); SIZE = frame bytes without the virtio header:
//
//	f2b-SIZE       frontend -> backend: virtio_user txonly -> net_vhost rxonly | arcnet --uplink sink
//	f2b-copy-SIZE  the same, arcnet --uplink sink-copy (copies every frame into a backend buffer)
//	b2f-SIZE       backend -> frontend: net_vhost txonly | arcnet --uplink source --source-size SIZE
//	               -> virtio_user rxonly
//	loop-SIZE      both ways: virtio_user flowgen (sends SIZE-byte frames as fast as it can, drains
//	               and counts what comes back) -> net_vhost io --port-topology=loop (sends every
//	               frame back on its one port) | arcnet --uplink loopback -> virtio_user
//
// Like for like (the result line's like_for_like=yes): f2b-copy, b2f and
// loop, where both backends move every byte of every frame. In f2b
// net_vhost copies each frame into an mbuf before rxonly frees it, while
// arcnet's sink counts frames without reading them (like_for_like=no). Both
// backends copy a looped frame differently: net_vhost from the guest into
// an mbuf and from the mbuf into the guest, arcnet once from the guest's
// transmit buffer into its receive buffer (datapath.Loopback); that is a
// difference of design, not of the work asked.
// Each process gets one CPU: testpmd with --lcores 0@C,1@C under taskset -c C
// (main lcore, worker and control threads on C), vhost-arcnet under taskset
// -c BE_CPU (GOMAXPROCS follows: 1). Both sides use the same memory type for
// the frontend's guest memory (the backend maps what the frontend gives it):
// --no-huge (4 KiB pages, memfd) by default, -mem huge for 2 MiB hugepages.
//
// What is measured: every stats period (--stats-period=1; testpmd's own
// timer makes that 2 s on some VMs) testpmd prints its port's packet rate
// over the exact interval. DPDK pair: the receiver's Rx-pps (net_vhost for
// f2b, virtio_user for b2f and loop). arcnet f2b: the sender's Tx-pps (virtio_user
// counts what it put into the ring; a full ring is a TX drop, so in steady
// state that is the rate the backend consumes), cross-checked with
// vhost-arcnet's own counters: SIGUSR1 at the start and at the end of the
// measured window, diff of the two "port stats" rx_packets =
// arcnet_ctr_mpps. arcnet b2f and loop: virtio_user's Rx-pps (tx_packets
// diff as arcnet_ctr_mpps). A loop figure counts frames that went both
// ways; its Gbps is one direction's.
//
// Samples that end less than -warmup seconds after the first non-zero one
// are discarded. A sample is "clean" when the frontend's forwarding thread
// was on its CPU >= -minshare of the interval and the backend too (busy
// pollers: DPDK's worker thread; arcnet --poll: all its threads summed); an
// eventfd-driven arcnet sleeps by design, so for it "clean" means its
// threads waited on the run queue, plus the hypervisor's steal time on its
// CPU, <= 1-minshare of the interval. A sample whose interval, as this
// program saw it, differs by more than 25 % from the previous one is not
// clean either (the reader was held up: the shares mean nothing then). The
// CPU times come from /proc/PID/task/TID/schedstat and /proc/stat, read
// without starting a process. A run ends when its clean samples cover
// SECONDS, or all of them -maxsec; its figure is the median of its clean
// samples ("filtered"), or of all its samples when none was clean
// ("unfiltered"). A case's figure is the median over its filtered runs, or
// over all its runs when none was filtered: check arcnet_clean / dpdk_clean
// (clean/all samples) and the CPU shares before trusting a ratio.
// Gbps = Mpps * SIZE * 8 (frame bytes only, no preamble/IFG/CRC).
//
// Output: one line per case and arcnet mode on stdout (default mode, then "-poll"):
//
//	case=f2b-64 arcnet_mpps=.. dpdk_mpps=.. arcnet_gbps=.. dpdk_gbps=.. ratio=.. [details] like_for_like=no
//	case=f2b-64-poll arcnet_mpps=.. dpdk_mpps=.. ...
//
// details: ratio_of_max (best run against best run: on this VM whole runs of
// either backend sometimes land in a slow mode, 2x apart, while the samples
// inside a run agree; compare the two ratios, raise -rounds when they
// differ), arcnet_ctr_mpps (backend counters), min..max over the runs used,
// clean/all samples, median CPU shares fe/be per run, and per run the
// round trip of a cache line between the two CPUs measured just before it
// (arcnet_c2c_ns, dpdk_c2c_ns: dpdk.C2CRoundTrip). On the test VM that
// figure tells the machine's mode: 100-190 ns in the fast runs, 400-670 in
// the slow ones, where every backend runs 2-3x slower; compare ratios of
// runs in the same mode.
// Caveat, f2b: at 1518 B the arcnet figure with the counting sink is mostly
// virtio_user's own transmit ceiling (txonly does not write payload
// either); f2b-copy is the comparison. Progress goes to
// stderr; per-run logs (command lines, testpmd and vhost-arcnet output,
// samples: "N PPS CLEAN FE BE WAIT DT_US", shares per mille) and
// results.txt stay in the work directory.
//
// Every flag defaults to the environment variable the shell script read
// (in brackets), so `CASES=f2b-64 ROUNDS=1 bench/vs-dpdk.sh 3` still works:
//
//	-cases       [CASES]      default "f2b-64 f2b-1518 b2f-64 b2f-1518"
//	-modes       [MODES]      arcnet modes, default "event poll"
//	-rounds      [ROUNDS]     default 3
//	-mem         [MEM]        nohuge (default: --no-huge, 4 KiB pages, memfd) | huge (2 MiB
//	                          hugetlbfs at -hugedir, --single-file-segments; nr_hugepages is
//	                          raised by what is missing, and lowered by as much again at the end)
//	-mem-mb      [MEM_MB]     testpmd memory per process (-m), default 512
//	-hugedir     [HUGEDIR]    default WORK/huge (mounted, and unmounted at the end, by this program)
//	-warmup      [WARMUP]     seconds of samples discarded after the first non-zero one, default 2
//	-minshare    [MINSHARE]   default 0.95; -filter=false [FILTER=0] counts every sample
//	-maxsec      [MAXSEC]     max seconds of samples per run after warm-up, default 3*SECONDS
//	-be-cpu / -fe-cpu [BE_CPU / FE_CPU]  CPUs for backend / frontend, default 0 / 1
//	-virtio-args [VIRTIO_ARGS] extra virtio_user devargs, e.g. ",mrg_rxbuf=0" (both backends)
//	-vhost-args  [VHOST_ARGS] extra net_vhost devargs
//	-eal-fe / -eal-be [EAL_FE / EAL_BE]  extra EAL args, e.g. "--log-level=pmd.net.virtio.*:debug"
//	-arcnet-bin  [ARCNET_BIN] vhost-arcnet binary (default: go build ./cmd/vhost-arcnet into WORK)
//	-arcnet-args [ARCNET_ARGS] extra vhost-arcnet flags
//	-dpdk-only   [DPDK_ONLY=1] skip vhost-arcnet (arcnet columns NA)
//	-work        [WORK]       work directory (logs, sockets, DPDK runtime dir), default a new /tmp/vs-dpdk.XXXXXX
//	-keep        [KEEP]       keep WORK at the end (default; KEEP=0 removes it)
//	-v           [VERBOSE=1]  per-sample lines on stderr
//
// Needs root, dpdk-testpmd (Debian 12: dpdk-dev, installed by `make setup`),
// taskset and stdbuf, and go unless -arcnet-bin or -dpdk-only. It busy-polls
// both CPUs for minutes: run it on an otherwise idle machine.
package main
