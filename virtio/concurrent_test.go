package virtio_test

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// chanBell is a kick/call channel: a buffered send never blocks and one
// pending signal is kept, like an eventfd.
type chanBell chan struct{}

func (c chanBell) ring() {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Wait and Interrupt make a chanBell a virtio.Doorbell.
func (c chanBell) Wait() error { <-c; return nil }
func (c chanBell) Interrupt()  {}

// stoppable is a doorbell whose Wait also ends when stop is closed.
type stoppable struct {
	bell chanBell
	stop chan struct{}
}

func (s stoppable) Wait() error {
	select {
	case <-s.bell:
		return nil
	case <-s.stop:
		return virtio.ErrInterrupted
	}
}

func (s stoppable) Interrupt() {}

// exchangeCount is the number of buffers each exchange test moves.
const exchangeCount = 100_000

// TestExchangeTX runs the driver and the device on two goroutines that
// exchange exchangeCount device-readable buffers through a queue, sleeping
// on kicks and calls as the notification suppression says (a lost wake-up
// would hang the test), and checks order and contents.
func TestExchangeTX(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		indirect bool
	}{
		{"flags", virtio.FVersion1, false},
		{"event idx", virtio.FVersion1 | virtio.FEventIdx, false},
		{"event idx indirect", virtio.FVersion1 | virtio.FEventIdx | virtio.FIndirectDesc, true},
		{"packed flags", virtio.FVersion1 | virtio.FRingPacked, false},
		{"packed event idx", virtio.FVersion1 | virtio.FRingPacked | virtio.FEventIdx, false},
		{"packed event idx indirect", virtio.FVersion1 | virtio.FRingPacked | virtio.FEventIdx | virtio.FIndirectDesc, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := exchangeCount
			if testing.Short() {
				n /= 10
			}
			packed := tc.features&virtio.FRingPacked != 0
			p := newPair(t, 256, tc.features, virtiotest.DriverOptions{SlotSize: 256, Packed: packed})
			kick, call := make(chanBell, 1), make(chanBell, 1)
			dead := make(chan struct{}) // closed when the device goroutine ends
			var wg sync.WaitGroup
			var devErr error
			wg.Add(1)
			go func() { // device
				defer wg.Done()
				defer close(dead)
				q := p.q
				var c virtio.Chain
				buf := make([]byte, 256)
				var idle virtio.Idle // no spin: sleep as soon as the ring is empty
				q.DisableNotify()
				for want := 0; want < n; {
					ok, err := q.Pop(&c)
					if err != nil {
						devErr = err
						return
					}
					if !ok {
						q.Publish()
						if q.NeedNotify() {
							call.ring()
						}
						_ = idle.Wait(q, kick, nil)
						continue
					}
					k := c.ReadOut(0, buf)
					seq := binary.LittleEndian.Uint64(buf)
					if seq != uint64(want) || k != 8+int(seq%200) || !pattern(buf[8:k], seq) {
						devErr = errors.New("device: chain out of order or corrupted")
						return
					}
					want++
					if err := q.Push(c.Head, 0); err != nil {
						devErr = err
						return
					}
					if want%16 == 0 {
						q.Publish()
						if q.NeedNotify() {
							call.ring()
						}
					}
				}
				q.Publish()
				if q.NeedNotify() {
					call.ring()
				}
			}()

			d := p.d
			seqOf := make([]uint64, d.Size())
			msg := make([]byte, 256)
			added, done := 0, 0
			for done < n {
				more := false
				for added < n {
					seq := uint64(added)
					binary.LittleEndian.PutUint64(msg, seq)
					fillPattern(msg[8:8+seq%200], seq)
					// Split in two descriptors to have real chains.
					m := msg[:8+seq%200]
					head, err := d.AddChain([][]byte{m[:5], m[5:]}, nil, tc.indirect)
					if errors.Is(err, virtiotest.ErrFull) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					seqOf[head] = seq
					added++
					more = true
				}
				if more && d.Publish() {
					kick.ring()
				}
				got := false
				for {
					e, ok := d.Used()
					if !ok {
						break
					}
					if seqOf[e.ID] != uint64(done) {
						t.Fatalf("completion %d: got chain of buffer %d", done, seqOf[e.ID])
					}
					done++
					got = true
				}
				if !got && done < n && !d.EnableInterrupts() {
					select {
					case <-call:
					case <-dead:
						require.NoError(t, devErr)
					}
				}
			}
			wg.Wait()
			require.NoError(t, devErr)
			require.Equal(t, p.d.AvailIdx(), p.q.LastAvail())
			if !packed {
				require.Equal(t, uint16(n), p.q.LastAvail())
			}
		})
	}
}

// TestExchangeRX moves exchangeCount frames from the device to the driver
// through receive buffers (mergeable and not) on two goroutines, checking
// order and contents.
func TestExchangeRX(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		bufLen   uint32
	}{
		{"single", virtio.FVersion1 | virtio.FEventIdx, 256},
		{"mergeable", virtio.FVersion1 | virtio.FEventIdx | virtio.NetFMrgRxbuf, 64},
		{"packed single", virtio.FVersion1 | virtio.FRingPacked | virtio.FEventIdx, 256},
		{"packed mergeable", virtio.FVersion1 | virtio.FRingPacked | virtio.NetFMrgRxbuf, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := exchangeCount
			if testing.Short() {
				n /= 10
			}
			p := newPair(t, 256, tc.features, virtiotest.DriverOptions{SlotSize: 256, Packed: tc.features&virtio.FRingPacked != 0})
			kick, call := make(chanBell, 1), make(chanBell, 1)
			dead := make(chan struct{}) // closed when the device goroutine ends
			var wg sync.WaitGroup
			var devErr error
			wg.Add(1)
			go func() { // device
				defer wg.Done()
				defer close(dead)
				q := p.q
				rx := virtio.NewNetRX(q)
				payload := make([]byte, 8+200)
				var idle virtio.Idle
				q.DisableNotify()
				for seq := 0; seq < n; {
					binary.LittleEndian.PutUint64(payload, uint64(seq))
					fillPattern(payload[8:8+seq%200], uint64(seq))
					ok, err := rx.Write(virtio.NetHdr{GSOSize: uint16(seq)}, [][]byte{payload[:3], payload[3 : 8+seq%200]})
					if err != nil {
						devErr = err
						return
					}
					if !ok {
						q.Publish()
						if q.NeedNotify() {
							call.ring()
						}
						_ = idle.Wait(q, kick, nil)
						continue
					}
					seq++
					if seq%8 == 0 {
						q.Publish()
						if q.NeedNotify() {
							call.ring()
						}
					}
				}
				q.Publish()
				if q.NeedNotify() {
					call.ring()
				}
			}()

			d := p.d
			var frameBuf []byte
			pending := 0 // buffers of the current frame still to come
			buf := make([]byte, 256)
			done := 0
			for done < n {
				more := false
				for {
					if _, err := d.AddIn(tc.bufLen); errors.Is(err, virtiotest.ErrFull) {
						break
					} else if err != nil {
						t.Fatal(err)
					}
					more = true
				}
				if more && d.Publish() {
					kick.ring()
				}
				got := false
				for {
					e, ok := d.Used()
					if !ok {
						break
					}
					got = true
					k := d.ReadIn(uint16(e.ID), buf[:e.Len])
					frameBuf = append(frameBuf, buf[:k]...)
					// Plain checks: require's reflection is slow in a loop
					// of 100k under emulation.
					if pending == 0 {
						var h virtio.NetHdr
						h.Decode(frameBuf)
						if h.GSOSize != uint16(done) || h.NumBuffers == 0 {
							t.Fatalf("frame %d: header %+v", done, h)
						}
						pending = int(h.NumBuffers)
					}
					pending--
					if pending > 0 {
						continue
					}
					f := frameBuf[virtio.NetHdrSize:]
					if len(f) != 8+done%200 || binary.LittleEndian.Uint64(f) != uint64(done) || !pattern(f[8:], uint64(done)) {
						t.Fatalf("frame %d: out of order or corrupted", done)
					}
					frameBuf = frameBuf[:0]
					done++
				}
				if !got && done < n && !d.EnableInterrupts() {
					select {
					case <-call:
					case <-dead:
						require.NoError(t, devErr)
					}
				}
			}
			wg.Wait()
			require.NoError(t, devErr)
		})
	}
}

func fillPattern(b []byte, seq uint64) {
	for i := range b {
		b[i] = byte(seq) ^ byte(i*13)
	}
}

func pattern(b []byte, seq uint64) bool {
	for i := range b {
		if b[i] != byte(seq)^byte(i*13) {
			return false
		}
	}
	return true
}

// TestUsedEventNoLostWakeup races the driver's used_event publication
// against the device's notification decision, thousands of times: the
// driver consumes used buffers with Used alone (which, with
// VIRTIO_F_EVENT_IDX and interrupts on, moves used_event past what it
// consumed, as Linux's virtqueue_get_buf does) and then sleeps on the call
// without any other re-check. Used must order its used_event store before
// its next load of used->idx with a full fence (Linux: virtio_store_mb in
// virtqueue_get_buf_ctx_split), or a device that publishes in between
// reads the old used_event, does not notify, and the driver sleeps forever
// (virtio 1.2 §2.7.10: "the driver MUST ... ensure ... a memory barrier").
// A lost wake-up sleeps for good; a wait longer than 10 s counts as one
// (not 1 s: a loaded 2-core machine under -race or qemu-user can stall the
// device goroutine that long without anything being lost).
func TestUsedEventNoLostWakeup(t *testing.T) {
	n := 300_000
	if testing.Short() {
		n /= 10
	}
	p := newPair(t, 64, virtio.FVersion1|virtio.FEventIdx, virtiotest.DriverOptions{SlotSize: 64})
	kick, call := make(chanBell, 1), make(chanBell, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var devErr error
	wg.Add(1)
	go func() { // device: completes chains one at a time, notifying as told
		defer wg.Done()
		q := p.q
		var c virtio.Chain
		var idle virtio.Idle
		q.DisableNotify()
		for {
			ok, err := q.Pop(&c)
			if err != nil {
				devErr = err
				return
			}
			if !ok {
				if idle.Wait(q, stoppable{kick, stop}, nil) != nil {
					return
				}
				continue
			}
			if err := q.Push(c.Head, 0); err != nil {
				devErr = err
				return
			}
			q.Publish()
			if q.NeedNotify() {
				call.ring()
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
		require.NoError(t, devErr)
	}()
	d := p.d
	msg := []byte("ping")
	added, done := 0, 0
	for done < n {
		for added < n && added-done < 4 {
			if _, err := d.AddChain([][]byte{msg}, nil, false); err != nil {
				t.Fatal(err)
			}
			added++
			if d.Publish() {
				kick.ring()
			}
		}
		got := false
		for {
			if _, ok := d.Used(); !ok {
				break
			}
			done++
			got = true
		}
		if got || done == n {
			continue
		}
		select {
		case <-call:
		case <-time.After(10 * time.Second):
			t.Fatalf("lost wake-up after %d of %d completions (%d added): used idx %d, used_event %d",
				done, n, added, d.UsedIdx(), d.UsedEvent())
		}
	}
}
