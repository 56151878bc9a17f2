// Package netns gives tests throwaway Linux network namespaces: the
// namespaces themselves, veth pairs between them, sockets and commands that
// live inside them, and a two-namespace "internet" (a host that runs
// vhost-arcnet and a peer with HTTP, TCP and UDP echo servers) for the
// uplink, NAT and port-forward tests.
//
// A typical test:
//
//	inet := netns.NewInternet(t) // skips unless root
//	srv := inet.ServeHTTP(t, handler)
//	cmd := inet.Host.StartBackground(t, binary, "--uplink", "tap", "--masquerade")
//	resp, err := inet.Host.HTTPClient(t).Get("http://" + srv.String() + "/")
//
// It is a non-test package so that the tests of every other package can
// import it; nothing outside tests should.
//
// What it owns: the namespaces it creates (named PREFIX-RANDOM, made with
// `ip netns add`, deleted with `ip netns del`), the links it creates in
// them, the sockets and servers it opens and the processes started with
// [NS.StartBackground]. Everything is released by t.Cleanup, also when the
// test fails; processes are killed by the PID this package started, never
// by name. A test that is not run as root is skipped. Under backend.Main
// (the packages' TestMain) a SIGINT or SIGTERM fails the running test so
// that its clean-ups run, and if they do not finish the namespaces still
// alive are deleted and the processes killed by PID (backend.LastResort);
// New skips once the tests were interrupted.
//
// Threat model: none; only the test itself drives it. Network traffic
// stays inside the namespaces a test created: nothing here opens a socket
// or adds an address or route in the namespace the test runs in.
//
// Concurrency: [NS.Do] runs its function on a locked OS thread switched
// into the namespace and switches back before it returns (or lets the
// thread die if it cannot), so the calling goroutine and every other
// goroutine stay in the test's namespace. A socket keeps the namespace it
// was created in, so sockets made in Do may be used from any goroutine.
// The helpers that take a testing.TB call t.Fatal and must be called from
// the test's goroutine; [NS.Do], [NS.Command], [Exists] and [LinkExists]
// may be called from any goroutine.
package netns
