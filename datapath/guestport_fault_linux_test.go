//go:build linux

package datapath_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath"
	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// faultServer is a vhost-user server whose sessions are GuestPorts on one
// switch, wired as the command wires them (a port leaves the switch when
// its session ends).
type faultServer struct {
	srv   *vhostuser.Server
	path  string
	ended chan error
	mu    sync.Mutex
	ports map[uint64]*datapath.GuestPort
	warn  warnLines // the log's lines at warning level and above
}

func newFaultServer(t *testing.T) *faultServer {
	t.Helper()
	fs := &faultServer{ended: make(chan error, 64), ports: map[uint64]*datapath.GuestPort{}}
	log := slog.New(slog.NewTextHandler(tlogWriter{t, fs.warn.add}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sw, err := datapath.NewSwitch(datapath.SwitchOptions{Logger: log})
	require.NoError(t, err)
	attached := map[uint64]*datapath.SwitchPort{}
	fs.srv, err = vhostuser.NewServer(vhostuser.Options{
		Logger: log,
		NewDevice: func(info vhostuser.SessionInfo) (vhostuser.Device, error) {
			gp, err := datapath.NewGuestPort(datapath.GuestPortOptions{Name: fmt.Sprint("guest", info.ID), QueuePairs: 1, Logger: log})
			if err != nil {
				return nil, err
			}
			sp, err := sw.Attach(gp, datapath.PortOptions{})
			if err != nil {
				return nil, err
			}
			fs.mu.Lock()
			fs.ports[info.ID], attached[info.ID] = gp, sp
			fs.mu.Unlock()
			return gp, nil
		},
		OnSessionEnd: func(info vhostuser.SessionInfo, err error) {
			fs.mu.Lock()
			sp := attached[info.ID]
			fs.mu.Unlock()
			sw.Detach(sp)
			fs.ended <- err
		},
	})
	require.NoError(t, err)
	fs.path = filepath.Join(t.TempDir(), "s")
	require.NoError(t, fs.srv.Listen(fs.path))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = fs.srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return fs
}

// guest connects a Go frontend with one running queue pair.
func (fs *faultServer) guest(t *testing.T) *vhostusertest.Frontend {
	t.Helper()
	f := vhostusertest.New(t, vhostusertest.Options{Timeout: 10 * time.Second})
	require.NoError(t, f.Dial(fs.path))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(1, 256))
	return f
}

// bcast is a broadcast frame from the locally administered MAC
// 02:00:00:00:00:id: the switch floods it to every other port.
func bcast(id, seq byte) []byte {
	b := make([]byte, 100)
	copy(b, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, id, 0x88, 0xb5})
	b[14], b[15] = id, seq
	return b
}

// exchange has b and c send each other n broadcast frames and checks that
// each arrives.
func exchange(t *testing.T, b, c *vhostusertest.Frontend, n int) {
	t.Helper()
	for i := range n {
		for _, p := range [][2]*vhostusertest.Frontend{{b, c}, {c, b}} {
			id := byte(1)
			if p[0] == c {
				id = 2
			}
			require.NoError(t, p[0].Send(bcast(id, byte(i))))
			got, err := p[1].WaitRecv()
			require.NoError(t, err)
			require.Equal(t, bcast(id, byte(i)), got)
		}
	}
}

// TestGuestShrinksMemory: a frontend truncates its guest memory (a memfd
// it did not seal) to 0 bytes while its queues run and two other guests
// exchange broadcasts through the switch, which floods them into the
// shrunk guest's receive buffers from the other guests' transmit workers.
// Without containment the first access would kill the process (SIGBUS);
// with it the shrunk guest's session ends with a fault error, its error
// fds are signalled, and the other guests go on.
func TestGuestShrinksMemory(t *testing.T) {
	faultLines.Store(0)
	fs := newFaultServer(t)
	b, c := fs.guest(t), fs.guest(t)
	exchange(t, b, c, 10)

	a := fs.guest(t)
	errRX, err := a.SetVringErr(0)
	require.NoError(t, err)
	errTX, err := a.SetVringErr(1)
	require.NoError(t, err)
	require.NoError(t, a.Send(bcast(3, 0))) // a claims its MAC; b and c receive it
	_, err = b.WaitRecv()
	require.NoError(t, err)
	_, err = c.WaitRecv()
	require.NoError(t, err)
	exchange(t, b, c, 10)

	require.NoError(t, a.ShrinkMemory())
	// Wake a's transmit worker too: it faults on the ring.
	require.NoError(t, a.Kick(1))
	exchange(t, b, c, 50) // floods into a's receive queue fault, on b's and c's workers

	select {
	case err := <-fs.ended:
		require.ErrorIs(t, err, virtio.ErrFault)
		require.ErrorIs(t, err, vhostuser.ErrBadMemory)
		var f *virtio.Fault
		require.True(t, errors.As(err, &f))
	case <-time.After(10 * time.Second):
		t.Fatal("the session of the shrunk guest did not end")
	}
	require.NoError(t, a.WaitClosed())
	require.NoError(t, a.WaitErr(errRX))
	require.NoError(t, a.WaitErr(errTX))

	exchange(t, b, c, 100)
	st := fs.srv.Stats()
	require.Equal(t, uint64(1), st.Faults)
	require.Equal(t, uint64(1), st.Errors)
	require.Equal(t, uint64(2), st.Active)
	require.EqualValues(t, 1, faultLines.Load(), "log lines at warning level about the fault")
	fs.mu.Lock()
	portA := fs.ports[3]
	fs.mu.Unlock()
	require.NotZero(t, portA.Stats().Drops(datapath.DropQueueBroken), "the fault is counted on the port")
	t.Logf("server stats after the fault: %+v", st)
}

// faultLines counts the warnings and errors logged through a tlogWriter
// that mention a guest memory fault.
var faultLines atomic.Int64

// tlogWriter writes to t's log; also, if set, sees every line.
type tlogWriter struct {
	t    *testing.T
	also func(line string)
}

func (w tlogWriter) Write(p []byte) (int, error) {
	line := string(p[:len(p)-1])
	if strings.Contains(line, "guest memory fault") && (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) {
		faultLines.Add(1)
	}
	if w.also != nil {
		w.also(line)
	}
	w.t.Log(line)
	return len(p), nil
}

// TestSwitchReadsShrunkMemory: the shrunk guest's transmit worker hands
// the switch a frame whose bytes are in the memory that shrank (its
// transmit ring is in a region that did not): the fault happens in the
// switch, copying the frame's head, and unwinds to the worker (faultTX).
// The session ends; the port must still leave the switch (Detach).
//
// Skipped: SwitchPort.Send releases its scratch (mutex, and the sequence
// number Detach waits on) without defer, so the unwinding fault leaves it
// held and Detach waits forever. switch.go is not this change's; see the
// report of issue 13.
func TestSwitchReadsShrunkMemory(t *testing.T) {
	fs := newFaultServer(t)
	b, c := fs.guest(t), fs.guest(t)
	a := fs.guest(t)
	require.NoError(t, a.Send(bcast(3, 0)))
	_, err := b.WaitRecv()
	require.NoError(t, err)
	_, err = c.WaitRecv()
	require.NoError(t, err)

	tx := a.Ring(1).Driver
	var lost *vhostusertest.Region
	for _, r := range a.Regions() {
		if tx.DescGPA()-r.GPA >= r.Size {
			lost = r
		}
	}
	require.NotNil(t, lost)
	frame := bcast(3, 1)
	at := lost.Size - 4096
	copy(lost.Data[at:], frame)
	head, err := tx.AddOut(make([]byte, virtio.NetHdrLen(a.Features())), frame)
	require.NoError(t, err)
	d := tx.ReadDesc(head)
	next := tx.ReadDesc(d.Next)
	next.Addr = lost.GPA + at
	tx.WriteDesc(d.Next, next)
	require.NoError(t, lost.Truncate(0))
	tx.Publish()
	require.NoError(t, a.Kick(1))

	select {
	case err := <-fs.ended:
		require.ErrorIs(t, err, virtio.ErrFault)
	case <-time.After(5 * time.Second):
		t.Fatal("the session of the shrunk guest did not end (its port did not leave the switch)")
	}
	exchange(t, b, c, 20)
}
