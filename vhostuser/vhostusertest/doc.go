// Package vhostusertest is an in-process vhost-user frontend for tests and
// benchmarks: it plays a VM launcher and the guest's virtio-net driver
// against a real vhostuser backend over a real unix socket.
//
// A Frontend owns guest memory in memfds (several regions, mapped
// MAP_SHARED; unlinked temporary files outside Linux; POSIX shared memory
// objects with MemoryShm; one file for every region with SingleFile), kick
// and call eventfds (or pipes, as QEMU uses on macOS), and one
// virtiotest.Driver per ring. Its convenience methods send requests in
// QEMU 7.2's order and check replies with QEMU's rules. Typical use:
//
//	f := vhostusertest.New(t, vhostusertest.Options{})
//	require.NoError(t, f.Dial(path))
//	require.NoError(t, f.Negotiate(0))         // everything offered but LOG_ALL
//	require.NoError(t, f.SetupQueues(1, 256))  // memory, rings, RX buffers
//	require.NoError(t, f.Send(frame))
//	got, err := f.WaitRecv()
//
// # Launcher profiles
//
// QEMU, CloudHypervisor and Crosvm replay what those launchers send, in
// their order, with their flags (need_reply), feature bits, socket role,
// memory layout and reconnect behaviour, each step citing the launcher's
// source file and function (qemu.go, cloudhypervisor.go, crosvm.go; QEMU
// 7.2 was also recorded from the real binary: vhostuser/testdata/
// launchers). The Frontend records what it sent (Sent), so tests compare
// it with the recordings. A launcher's guest is Linux's virtio_net: it
// refuses features Linux refuses (ErrGuestRefuses).
//
//	q := vhostusertest.NewQEMU(vhostusertest.New(t, opts), vhostusertest.QEMU72)
//	require.NoError(t, q.DialBackend(path))
//	require.NoError(t, q.Init())      // at chardev connect
//	require.NoError(t, q.GuestBoot()) // the driver probing
//	require.NoError(t, q.Start())     // DRIVER_OK
//	... q.F.Send, q.F.WaitRecv ...
//	require.NoError(t, q.Reconnect(path)) // after the backend restarted
//
// Hostile tests use WriteMessage and WriteRaw to send anything, then
// WaitClosed to see the backend drop the connection.
//
// A Frontend, and a launcher over it, is used by one goroutine at a time.
// Guest memory, fds and the connection are released by Close, which New
// registers with t.Cleanup.
package vhostusertest
