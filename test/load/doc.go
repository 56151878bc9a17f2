// Package load holds the bounded load and churn tests of issue 13 (and
// TestMemory, issue 14: RSS idle, per guest port, per 100k NAT flows) against a
// real vhost-arcnet process (test/backend, `--uplink none`: the switch with
// the gateway's services) driven by the in-process Go vhost-user frontend
// (vhostuser/vhostusertest) playing the guests:
//
//   - TestLoad64: 64 guest ports on one process, each gets its address by
//     DHCP (every request answered), then all send unicast UDP frames to
//     their peers through the switch and receive for a bounded time.
//     Reported and checked: per-port fairness (slowest port's frames vs the
//     fastest's), the accounting (every frame sent was delivered or counted
//     as a drop by the backend), the process's RSS before and after, and
//     that its fds and goroutines are back where they were once every
//     guest disconnected. TestLoad64TAP does the same with --uplink tap in a
//     throwaway network namespace (test/netns; root only, skipped
//     otherwise), each guest also sending UDP through the router and the
//     NAT to an echo server on the host's end of the TAP link.
//   - TestChurn: 1,000 connect/negotiate/traffic/disconnect cycles of a
//     frontend, with abrupt closes at every stage (after connect, in the
//     middle of a message, after GET_FEATURES, after SET_FEATURES, after
//     SET_MEM_TABLE, after the rings start, with frames in flight, after a
//     whole DHCP exchange), while another guest stays attached and receives
//     the churning guest's frames: the process's fds, goroutines and RSS
//     come back to their baseline.
//
// The figures come from outside the process: RSS (VmRSS, RssAnon) from
// /proc/PID/status, fds from /proc/PID/fd, goroutines and heap from the
// process's own Prometheus metrics (--metrics on loopback: go_goroutines,
// go_memstats_heap_inuse_bytes), the frame counters from its JSON log
// (SIGUSR1).
//
// The package has no code outside its tests. TestLoad64 and TestChurn need
// no root and use a unix socket in a temporary directory and a loopback TCP
// port only; TestLoad64TAP runs everything of its own in its namespace:
//
//	go test ./test/load/          # the three tests, ~20 s on 2 cores
//	go test -short ./test/load/   # 200 churn cycles, 2 s load phases
//
// ARCNET_BIN names a vhost-arcnet binary to test instead of building
// ./cmd/vhost-arcnet once per test binary; LOAD_KEEP=1 keeps the working
// directory (socket, log); LOAD_CHURN_CYCLES=N runs N churn cycles instead
// (10,000 show the RSS flat after the first ~1,000).
package load
