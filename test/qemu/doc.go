// Package qemu is the end-to-end test harness of vhost-arcnet: it boots real
// Linux guests under QEMU (TCG) whose virtio-net device is served by a
// vhost-arcnet process the test started, and reads the guests' results from
// their serial consoles.
//
// What it owns:
//   - the guest image (image_linux.go): the current Debian cloud kernel
//     (linux-image-cloud-amd64), fetched with apt-get download, its bzImage
//     decompressed to the ELF vmlinux that QEMU boots through the PVH entry,
//     and a busybox initramfs (newc cpio + gzip written in Go, cpio.go) with
//     the virtio modules in dependency order, the /init script
//     (guest/init.sh), a small raw-frame sender (rawframe/) and a UDP echo
//     client and server (udpprobe/; busybox nc has no UDP). All are
//     cached under $ARCNET_CACHE/guest (default /var/cache/vhost-arcnet/guest),
//     keyed by kernel release and a hash of everything in the initramfs;
//   - the runner (qemu_linux.go): QEMU 7.2 command lines for slirp and
//     vhost-user (client, server and reconnect roles), the serial console
//     reader and writer, bounded waits;
//   - the backend helper (backend_linux.go, on test/backend, which test/uplink
//     and test/dpdk share): builds cmd/vhost-arcnet once per test binary,
//     starts it, waits for msg="listening", reads the JSON log records, asks
//     for and parses the msg="port stats" records;
//   - the scenarios (*_test.go): the vhost-user roles and measurement
//     uplinks (vhostuser_linux_test.go), the guest network of --uplink none
//     with DHCP, DNS, two guests, anti-spoofing and a backend restart
//     (network_linux_test.go, with a DNS upstream served by the test on
//     127.0.0.1, netenv_linux_test.go), the guest's way out through
//     --uplink tap --masquerade and in through --forward, with vhost-arcnet
//     inside a network namespace whose default route leads to a second
//     one that plays the internet (test/netns; nat_linux_test.go), and the
//     demo of `make demo` (demo_linux_test.go, the same namespaces, run
//     only with ARCNET_DEMO=1).
//
// Guest protocol: the kernel command line carries test=STEP,STEP,... and
// knobs (see guest/init.sh); the guest prints one machine-readable line per
// fact, "GUEST-<TAG> key=value ...", ends with "GUEST-RESULT PASS" or
// "GUEST-RESULT FAIL <reason>" and powers off. A "wait:TOKEN" step prints
// "GUEST-WAIT TOKEN" and blocks until the test writes TOKEN to the console,
// which lets a test act (restart the backend, read counters) at a known point
// of the guest's run.
//
// A scenario, in outline (see vhostuser_linux_test.go):
//
//	env := qemu.NewEnv(t, 1)                   // skips where QEMU cannot run
//	sock := env.Path("vu.sock")
//	be := env.StartBackend("b", "--socket", sock, "--uplink", "loopback")
//	g := env.StartGuest(qemu.GuestConfig{Net: qemu.VhostUserNet{Socket: sock},
//		Test: "static,arping,stats,wait:done", Knobs: []string{"addr=192.168.127.2/24"}})
//	_ = g.AwaitWait("done", time.Minute)       // the guest is idle, still connected
//	stats, _ := be.Stats()                     // SIGUSR1 -> msg="port stats" records
//	_ = g.Wake("done")
//	c := g.Wait()                              // c.Passed(), c.First("NIC"), c.Stats("rx_packets")
//
// Threat model: none beyond a test's; the guest is our own image. The
// harness still bounds every wait with a timeout, and every process it
// starts is killed by PID, and every socket and temporary directory removed,
// by t.Cleanup, whatever the test's outcome.
//
// Concurrency: an Env belongs to one test. Guest boots of parallel tests are
// limited by a weighted semaphore (ARCNET_QEMU_PARALLEL, default 2: this is
// a 2-core machine and every TCG guest keeps one core busy while it boots).
// The guest image and the backend binary are built once per test binary and
// shared read-only.
//
// Environment knobs: ARCNET_CACHE (cache root), ARCNET_GUEST_KERNEL (kernel
// release, e.g. 6.1.0-56-cloud-amd64, instead of the current one),
// ARCNET_BIN (use this vhost-arcnet binary instead of building one),
// ARCNET_QEMU_TRACE=1 (QEMU -trace vhost_user_*), ARCNET_QEMU_KEEP=1 (keep
// logs and sockets of every test), ARCNET_QEMU_PARALLEL, ARCNET_DEMO=1 (run
// TestDemo).
package qemu
