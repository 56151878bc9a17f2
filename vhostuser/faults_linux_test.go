//go:build linux

package vhostuser_test

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/internal/testlog"
	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// TestServerMemoryLimit: Options.MaxMemory bounds the guest memory of all
// sessions together. A session whose ADD_MEM_REG or SET_MEM_TABLE would go
// above it gets a non-zero ack and one log line naming the limit, and goes
// on with the memory it had; once another session ends, the memory fits.
func TestServerMemoryLimit(t *testing.T) {
	var logs testlog.Buffer
	h := newHarness(t, vhostuser.Options{MaxMemory: 48 * mib, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	// Two 16 MiB regions each (the frontend's default).
	first := started(t, h, vhostusertest.Options{}, 1, 64)
	require.Equal(t, uint64(32*mib), h.srv.Stats().Memory)

	// ADD_MEM_REG: the second region would make 64 MiB.
	second := vhostusertest.New(t, vhostusertest.Options{})
	require.NoError(t, second.Dial(h.path))
	require.NoError(t, second.Negotiate(0))
	err := second.SendMemory()
	require.ErrorContains(t, err, "ADD_MEM_REG failed (ack 1)")
	require.Equal(t, uint64(48*mib), h.srv.Stats().Memory)
	require.Contains(t, logs.String(), "server's limit of 50331648 bytes (Options.MaxMemory, vhost-arcnet --max-memory-gib)")
	require.Contains(t, logs.String(), vhostuser.ErrMemoryLimit.Error())
	_, err = second.GetFeatures() // the session goes on
	require.NoError(t, err)

	// SET_MEM_TABLE (no CONFIGURE_MEM_SLOTS): 32 MiB more do not fit.
	third := vhostusertest.New(t, vhostusertest.Options{
		ProtocolFeatures: vhostuser.SupportedProtocolFeatures &^ vhostuser.ProtocolFConfigureMemSlots,
	})
	require.NoError(t, third.Dial(h.path))
	require.NoError(t, third.Negotiate(0))
	require.ErrorContains(t, third.SetMemTable(), "SET_MEM_TABLE: ack 1")
	require.Equal(t, uint64(48*mib), h.srv.Stats().Memory)

	// The first session ends: its 32 MiB are released, and the others'
	// memory fits.
	echoOnce(t, first, 0, frame(100, 1), vhostusertest.LayoutSplit)
	first.Close()
	require.NoError(t, h.waitEnded().err)
	require.Equal(t, uint64(16*mib), h.srv.Stats().Memory)
	require.NoError(t, second.SetupQueues(1, 64)) // the first region again (counted once), then the second
	echoOnce(t, second, 0, frame(100, 2), vhostusertest.LayoutSplit)
	require.Equal(t, uint64(32*mib), h.srv.Stats().Memory)
	require.ErrorContains(t, third.SetMemTable(), "SET_MEM_TABLE: ack 1") // 64 MiB > 48
	third.Close()
	require.NoError(t, h.waitEnded().err)
	second.Close()
	require.NoError(t, h.waitEnded().err)
	st := h.srv.Stats()
	require.Equal(t, uint64(0), st.Memory)
	require.Equal(t, uint64(0), st.Errors)
	require.Equal(t, uint64(48*mib), st.MemoryLimit)
}

// TestMemoryLimitDefault: the server-wide default, and a limit above the
// address space refused.
func TestMemoryLimitDefault(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	require.Equal(t, uint64(vhostuser.DefaultMaxMemory), h.srv.Stats().MemoryLimit)
	_, err := vhostuser.NewServer(vhostuser.Options{MaxMemory: 1 << 48, NewDevice: func(vhostuser.SessionInfo) (vhostuser.Device, error) { return nil, nil }})
	require.Error(t, err)
}

// TestVringErrSignalled: a ring the guest breaks (its avail index jumps
// past the ring size, virtio 1.2 §2.7.6) has its SET_VRING_ERR fd
// signalled; the other ring's is not, and the session goes on.
func TestVringErrSignalled(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := started(t, h, vhostusertest.Options{}, 1, 64)
	errRX, err := f.SetVringErr(0)
	require.NoError(t, err)
	errTX, err := f.SetVringErr(1)
	require.NoError(t, err)
	echoOnce(t, f, 0, frame(100, 1), vhostusertest.LayoutSplit)
	require.False(t, vhostusertest.ErrSignalled(errTX))

	tx := f.Ring(1).Driver
	tx.SetAvailIdx(tx.AvailIdx() + 64 + 1)
	require.NoError(t, f.Kick(1))
	require.NoError(t, f.WaitErr(errTX))
	d := h.lastDevice()
	eventually(t, "broken queue", func() bool { return d.broken.Load() != nil })
	require.ErrorIs(t, *d.broken.Load(), virtio.ErrBroken)
	require.ErrorIs(t, *d.broken.Load(), virtio.ErrBadRing)
	require.False(t, vhostusertest.ErrSignalled(errRX))
	_, err = f.GetFeatures() // the session goes on
	require.NoError(t, err)

	// A new error fd replaces the old one, unsignalled.
	errTX2, err := f.SetVringErr(1)
	require.NoError(t, err)
	require.False(t, vhostusertest.ErrSignalled(errTX2))
}

// TestShrunkMemoryEndsSession: a frontend truncates its memory file while
// its rings run (the echo device's workers touch it): its session ends
// with a fault error, its error fds are signalled, another session goes
// on, and the process is alive to tell. (datapath's TestGuestShrinksMemory
// does this with guest ports on a switch.)
func TestShrunkMemoryEndsSession(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	good := started(t, h, vhostusertest.Options{}, 1, 64)
	bad := started(t, h, vhostusertest.Options{}, 1, 64)
	errTX, err := bad.SetVringErr(1)
	require.NoError(t, err)
	echoOnce(t, bad, 0, frame(100, 1), vhostusertest.LayoutSplit)
	require.NoError(t, bad.ShrinkMemory())
	require.NoError(t, bad.Kick(1))
	e := h.waitEnded()
	require.ErrorIs(t, e.err, virtio.ErrFault)
	require.ErrorIs(t, e.err, vhostuser.ErrBadMemory)
	var f *virtio.Fault
	require.True(t, errors.As(e.err, &f))
	require.NoError(t, bad.WaitErr(errTX))
	require.NoError(t, bad.WaitClosed())
	echoOnce(t, good, 0, frame(100, 2), vhostusertest.LayoutSplit)
	st := h.srv.Stats()
	require.Equal(t, uint64(1), st.Faults)
	require.Equal(t, uint64(32*mib), st.Memory)
}

// TestSealedMemfd: a memfd sealed against shrinking is recognised (QEMU's
// memory-backend-memfd seals so); an unsealed one is mapped too.
func TestSealedMemfd(t *testing.T) {
	fd, err := unix.MemfdCreate("sealed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.Ftruncate(fd, mib))
	require.False(t, vhostuser.ShrinkSealed(fd))
	_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL)
	require.NoError(t, err)
	require.True(t, vhostuser.ShrinkSealed(fd))
	require.Error(t, unix.Ftruncate(fd, 0))
}
