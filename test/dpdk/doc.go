// Package dpdk tests vhost-arcnet against DPDK's virtio_user, an independent
// vhost-user frontend (issue 2, test 3): dpdk-testpmd plays the guest driver
// without a VM (`--vdev net_virtio_user0,path=SOCK`), vhost-arcnet serves it
// on SOCK with a measurement uplink, and both sides count the frames.
//
// What it owns:
//   - the harness (proc_linux.go, shared with cmd/vs-dpdk; the tests' side in
//     harness_linux_test.go): builds cmd/vhost-arcnet once per test binary
//     (or uses ARCNET_BIN; test/backend), starts it with --log-format json and waits for
//     msg="listening"; starts dpdk-testpmd with --no-huge, --no-pci, a
//     private --file-prefix, RUNTIME_DIRECTORY in a per-test temporary
//     directory, --stats-period=1 (it has no terminal) and its lcores pinned
//     to one CPU; stops both with SIGINT by PID and kills whatever is left in
//     t.Cleanup;
//   - the parsers (parse.go): testpmd's "Forward statistics" blocks,
//     negotiated features and periodic Rx-pps/Tx-pps rates, vhost-arcnet's
//     msg="port stats" JSON records; and what cmd/vs-dpdk reads from /proc
//     (procfs.go: a thread's schedstat, a CPU's steal time);
//   - the measurement of the side-by-side comparison (measure.go): the
//     CPU-share filter over testpmd's rates, a run's figure and a case's
//     "case=... ratio=..." line; cmd/vs-dpdk runs it (make bench-dpdk);
//   - the scenarios (dpdk_linux_test.go): DPDK's own net_vhost backend as a
//     reference (it proves the harness and the machine), then vhost-arcnet
//     with --uplink sink (virtio_user txonly: frontend -> backend; also
//     sink-copy, split and packed), --uplink source (rxonly: backend ->
//     frontend) and --uplink loopback (io with --tx-first: both ways),
//     each with default devargs, mrg_rxbuf=0,
//     in_order=1, in_order=0 (out-of-order completion, indirect
//     descriptors), queues=2 (--queue-pairs 2), and packed virtqueues
//     (packed_vq=1 against --packed-rings, in order and with in_order=0).
//
// The tests skip unless they run as root with dpdk-testpmd installed (Debian
// 12: the dpdk-dev package; `make setup` installs it), and in -short mode.
// They take under a minute on an idle machine (about two when it is busy):
// sixteen testpmd runs of a few seconds each.
//
// Threat model: none beyond a test's; the frontend is DPDK's. Every wait is
// bounded, every process the harness starts is stopped or killed by PID, and
// every socket, log and DPDK runtime directory removed, whatever the outcome.
//
// Concurrency: the tests run one after the other (no t.Parallel): this is a
// 2-core machine and testpmd busy-polls a core.
//
// Environment knobs: ARCNET_BIN (use this vhost-arcnet binary instead of
// building one), ARCNET_DPDK_LOG (testpmd --log-level, default
// "pmd.net.virtio.init:debug"; "pmd.net.virtio.*:debug" shows everything),
// ARCNET_LOG_LEVEL (vhost-arcnet --log-level, default info),
// ARCNET_DPDK_KEEP=1 (keep every test's logs and print where).
package dpdk
