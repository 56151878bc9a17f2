// Package vhostusertest is an in-process vhost-user frontend for tests and
// benchmarks: it plays QEMU and the guest's virtio-net driver against a
// real vhostuser backend over a real unix socket.
//
// A Frontend owns guest memory in memfds (several regions, mapped
// MAP_SHARED; unlinked temporary files outside Linux), kick and call
// eventfds (or pipes, as QEMU uses on macOS), and one virtiotest.Driver per
// ring. It sends requests in QEMU 7.2's order and checks replies with
// QEMU's rules. Typical use:
//
//	f := vhostusertest.New(t, vhostusertest.Options{})
//	require.NoError(t, f.Dial(path))
//	require.NoError(t, f.Negotiate(0))         // everything offered but LOG_ALL
//	require.NoError(t, f.SetupQueues(1, 256))  // memory, rings, RX buffers
//	require.NoError(t, f.Send(frame))
//	got, err := f.WaitRecv()
//
// Hostile tests use WriteMessage and WriteRaw to send anything, then
// WaitClosed to see the backend drop the connection.
//
// A Frontend is used by one goroutine at a time. Guest memory, fds and the
// connection are released by Close, which New registers with t.Cleanup.
package vhostusertest
