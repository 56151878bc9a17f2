package vhostusertest_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// sink is a Device that consumes every transmitted frame and greets the
// guest with one frame on receiveq 0 when it starts.
type sink struct {
	frames atomic.Uint64
	mu     sync.Mutex
	stops  map[int]func()
}

func (s *sink) StartQueue(idx int, q *virtio.Queue, kick virtio.Doorbell, call virtio.Notifier) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if idx == 0 {
		if ok, err := virtio.NewNetRX(q).Write(virtio.NetHdr{}, [][]byte{[]byte("hello guest")}); ok && err == nil {
			q.Publish()
			if q.NeedNotify() {
				_ = call.Notify()
			}
		}
		s.stops[idx] = func() {}
		return
	}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		var c virtio.Chain
		for !stop.Load() {
			ok, err := q.Pop(&c)
			if err != nil {
				return
			}
			if !ok {
				if err := kick.Wait(); err != nil && !errors.Is(err, virtio.ErrInterrupted) {
					return
				}
				continue
			}
			s.frames.Add(1)
			_ = q.Push(c.Head, 0)
			q.Publish()
			if q.NeedNotify() {
				_ = call.Notify()
			}
		}
	}()
	s.stops[idx] = func() { stop.Store(true); kick.Interrupt(); <-done }
}

func (s *sink) StopQueue(idx int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stops[idx]()
	delete(s.stops, idx)
}

func (s *sink) SetLog(*virtio.DirtyLog) {}
func (s *sink) Close()                  {}

func TestFrontend(t *testing.T) {
	for _, pipes := range []bool{false, true} {
		t.Run(map[bool]string{false: "eventfd", true: "pipes"}[pipes], func(t *testing.T) {
			dev := &sink{stops: map[int]func(){}}
			srv, err := vhostuser.NewServer(vhostuser.Options{
				Logger:    slog.New(slog.DiscardHandler),
				NewDevice: func(vhostuser.SessionInfo) (vhostuser.Device, error) { return dev, nil },
			})
			require.NoError(t, err)
			dir, err := os.MkdirTemp("", "vhut")
			require.NoError(t, err)
			defer os.RemoveAll(dir)
			path := filepath.Join(dir, "s")
			require.NoError(t, srv.Listen(path))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = srv.Serve(ctx) }()
			defer func() { cancel(); <-done }()

			f := vhostusertest.New(t, vhostusertest.Options{Pipes: pipes})
			require.NoError(t, f.Dial(path))
			require.NoError(t, f.Negotiate(0))
			require.Equal(t, vhostuser.DefaultFeatures&^(vhostuser.FLogAll|virtio.NetFMQ), f.Features(), "no MQ with one queue pair")
			require.Equal(t, vhostuser.SupportedProtocolFeatures, f.ProtocolFeatures())
			require.NoError(t, f.SetupQueues(1, 128))
			got, err := f.WaitRecv()
			require.NoError(t, err)
			require.Equal(t, "hello guest", string(got))
			for i := 0; i < 300; i++ {
				require.NoError(t, f.Send([]byte("frame to the device")))
			}
			_, err = f.WaitCall(1)
			require.NoError(t, err)
			for !f.TxDone(0) {
				_, err = f.WaitCall(1)
				require.NoError(t, err)
			}
			require.Equal(t, uint64(300), dev.frames.Load())
			base, err := f.GetVringBase(1)
			require.NoError(t, err)
			require.Equal(t, uint16(300), base)
		})
	}
}
