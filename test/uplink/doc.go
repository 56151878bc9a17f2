// Package uplink holds the end-to-end tests and benchmarks of vhost-arcnet's
// TAP uplink (issue 9) and XDP uplink (issue 10, xdp_linux_test.go) with
// the in-process Go vhost-user frontend (vhostuser/vhostusertest) playing
// the guest: a real vhost-arcnet process runs `--uplink tap --masquerade`
// (or `--uplink xdp:inet0`, on its veth) inside the Host namespace of a
// test/netns Internet, and kernel servers in its Inet namespace play the
// internet. The guest gets its address by DHCP, crafts its own frames
// (a minimal TCP in the test: sequence numbers, windows, checksums, TSO
// frames with a virtio-net header) and reads the backend's counters from
// its JSON log (SIGUSR1).
//
// The vmnet uplink (issue 11) is tested the same way (vmnet_linux_test.go):
// vhost-arcnet runs `--uplink vmnet` with this test binary as its
// vmnet-helper (the fake of hostif/vmnettest, bridging the vmnet frames to
// a TAP in Host that plays macOS's bridge100) and takes its NAT address
// from the fake's DHCP server.
//
// The package has no code outside its tests. Everything runs as root; the
// tests and benchmarks skip otherwise:
//
//	go test ./test/uplink/                          # the tests, ~30 s
//	go test -run '^$' -bench . ./test/uplink/       # the benchmarks
//
// ARCNET_BIN names a vhost-arcnet binary to test instead of building
// ./cmd/vhost-arcnet once per test binary. For the benchmarks,
// UPLINK_BENCH_ARGS adds vhost-arcnet flags (for example "--cpuprofile
// /tmp/cpu.prof"; each sub-benchmark starts its own process, so give one
// sub-benchmark with -bench) and UPLINK_BENCH_QUEUE sets the guest's queue
// size for BenchmarkTCPThroughput (default 256, QEMU's); UPLINK_BENCH_CC
// sets its kernel senders' congestion control (default cubic, whatever
// the machine's net.ipv4.tcp_congestion_control).
//
// Traffic stays on loopback and inside the namespaces a test created; each
// test checks at its end that vhost-arcnet left no TAP link, route or
// nftables table behind and that its namespaces are gone.
package uplink
