// Package backend runs vhost-arcnet for the end-to-end tests (test/qemu,
// test/uplink, test/dpdk): it builds the binary once per test binary (or
// uses ARCNET_BIN), starts it with --log-format json (optionally wrapped,
// e.g. `ip netns exec NS`), reads its JSON log records from stderr as they
// come, waits for a record, asks for the counters (SIGUSR1) and stops it
// (SIGTERM, then SIGKILL by its PID) and checks the exit.
//
// It is a test helper: Start takes a testing.TB, stops the process when the
// test ends if it still runs, and logs the tail of its log when the test
// failed.
//
// Threat model: none beyond a test's. Every wait is bounded; every process
// started is stopped or killed by PID when the test ends.
//
// Interrupts: [Main], the end-to-end packages' TestMain, catches SIGINT
// (Ctrl-C) and SIGTERM: the running test's waits fail with "interrupted",
// so its t.Cleanup functions run (namespaces deleted, processes stopped,
// directories removed); a second signal, or clean-ups that hang, run the
// [LastResort] undos instead; the test binary exits non-zero.
//
// Concurrency: a Process's methods may be called from any goroutine; one
// goroutine per process reads its stderr and wakes the waiters.
package backend
