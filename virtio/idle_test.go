package virtio_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// countBell is a doorbell whose Wait returns at once and counts the calls.
type countBell struct{ waits int }

func (c *countBell) Wait() error { c.waits++; return nil }
func (c *countBell) Interrupt()  {}

// TestIdleSpin: on an empty ring Wait yields (returns without sleeping)
// for Spin after the ring ran empty, then sleeps on the doorbell; Busy
// starts the spin anew; Spin 0 sleeps at once; Poll never sleeps.
func TestIdleSpin(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
	}{
		{"split", virtio.FVersion1 | virtio.FEventIdx},
		{"packed", virtio.FVersion1 | virtio.FRingPacked | virtio.FEventIdx},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, 16, tc.features)
			bell := &countBell{}

			idle := virtio.Idle{}
			require.NoError(t, idle.Wait(p.q, bell, nil))
			require.Equal(t, 1, bell.waits, "no spin: the first empty poll sleeps")

			const spin = 20 * time.Millisecond
			idle = virtio.Idle{Spin: spin}
			for round := 0; round < 2; round++ {
				bell.waits = 0
				if round == 1 {
					// Half a spin, then work: the spin starts anew.
					for t0 := time.Now(); time.Since(t0) < spin/2; {
						require.NoError(t, idle.Wait(p.q, bell, nil))
					}
					require.Zero(t, bell.waits)
					idle.Busy()
				}
				start := time.Now()
				yields := 0
				for bell.waits == 0 {
					require.NoError(t, idle.Wait(p.q, bell, nil))
					yields++
					require.Less(t, time.Since(start), 10*time.Second, "the spin never ended")
				}
				took := time.Since(start)
				require.GreaterOrEqual(t, took, spin, "slept after %d yields", yields)
				require.Greater(t, yields, 1)
			}

			idle = virtio.Idle{Poll: true}
			bell.waits = 0
			for i := 0; i < 1000; i++ {
				require.NoError(t, idle.Wait(p.q, bell, nil))
			}
			require.Zero(t, bell.waits, "polling: never sleeps")
		})
	}
}

// TestIdlePolite: a spin yields the OS thread too only while a call was
// sent within the last Spin (any device of the process); Poll never does.
func TestIdlePolite(t *testing.T) {
	p := newPair(t, 16, virtio.FVersion1|virtio.FEventIdx)
	bell := &countBell{}
	const spin = 5 * time.Second // never reached: 16 turns each
	spinFor := func(idle *virtio.Idle, n int) {
		for i := 0; i < n; i++ {
			require.NoError(t, idle.Wait(p.q, bell, nil))
		}
		require.Zero(t, bell.waits, "still spinning")
	}

	virtio.SetLastCall(int64(time.Hour)) // no call lately
	idle := virtio.Idle{Spin: spin}
	spinFor(&idle, 16)
	require.False(t, idle.Polite(), "no call: the spin keeps the thread")

	virtio.CallSent()
	spinFor(&idle, 16)
	require.True(t, idle.Polite(), "a call just now: the spin yields the thread")

	virtio.SetLastCall(int64(spin)) // the call is a spin old
	spinFor(&idle, 16)
	require.False(t, idle.Polite(), "the call is older than the spin")

	virtio.CallSent()
	polling := virtio.Idle{Spin: spin, Poll: true}
	spinFor(&polling, 16)
	require.False(t, polling.Polite(), "polling never yields the thread")
}
