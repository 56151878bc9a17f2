package vhostuser_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// frame returns an Ethernet-looking frame of n bytes with a pattern seeded
// by seed.
func frame(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// echoOnce sends fr on queue pair qp and checks it comes back.
func echoOnce(t *testing.T, f *vhostusertest.Frontend, qp int, fr []byte, layout vhostusertest.Layout) {
	t.Helper()
	require.NoError(t, f.SendFrame(qp, virtio.NetHdr{}, fr, layout))
	got, err := f.WaitRecv()
	require.NoError(t, err)
	require.True(t, bytes.Equal(fr, got), "echoed frame differs (%d vs %d bytes)", len(fr), len(got))
}

func TestSessionTraffic(t *testing.T) {
	base := vhostuser.DefaultFeatures &^ (vhostuser.FLogAll | virtio.NetFMQ) // one queue pair: no MQ
	cases := []struct {
		name     string
		features uint64
		opts     vhostusertest.Options
		sizes    []int
		burst    int // frames sent before any is received: fewer than receive chains
	}{
		{"mergeable", base, vhostusertest.Options{}, []int{60, 1514, 4000, 9000, 65000}, 200},
		{"mergeable-eventidx-off", base &^ virtio.FEventIdx, vhostusertest.Options{}, []int{60, 1514, 9000}, 200},
		{"plain", base &^ virtio.NetFMrgRxbuf, vhostusertest.Options{}, []int{60, 1514}, 200},
		{"plain-big-rx", base &^ virtio.NetFMrgRxbuf, vhostusertest.Options{RxBufLen: 12 + 65550, SlotSize: 4096}, []int{60, 1514, 30000, 65000}, 10},
		{"plain-indirect-rx", base &^ virtio.NetFMrgRxbuf, vhostusertest.Options{RxIndirect: true, RxBufLen: 8192}, []int{60, 1514, 8000}, 150},
		{"pipes", base, vhostusertest.Options{Pipes: true}, []int{60, 1514, 4000}, 200},
		{"no-protocol-features", base &^ vhostuser.FProtocolFeatures, vhostusertest.Options{}, []int{60, 1514}, 200},
		{"no-eventidx-no-indirect", base &^ (virtio.FEventIdx | virtio.FIndirectDesc), vhostusertest.Options{}, []int{60, 1514}, 200},
		{"one-region", base, vhostusertest.Options{Regions: 1}, []int{60, 1514}, 200},
		{"legacy-header", base &^ (virtio.FVersion1 | virtio.NetFMrgRxbuf), vhostusertest.Options{}, []int{60, 1514}, 200},
		{"packed", base | virtio.FRingPacked, vhostusertest.Options{}, []int{60, 1514, 4000, 9000, 65000}, 200},
		{"packed-eventidx-off", (base | virtio.FRingPacked) &^ virtio.FEventIdx, vhostusertest.Options{}, []int{60, 1514, 9000}, 200},
		{"packed-plain-indirect-rx", (base | virtio.FRingPacked) &^ virtio.NetFMrgRxbuf, vhostusertest.Options{RxIndirect: true, RxBufLen: 8192}, []int{60, 1514, 8000}, 150},
		{"packed-plain", (base | virtio.FRingPacked) &^ virtio.NetFMrgRxbuf, vhostusertest.Options{}, []int{60, 1514}, 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The server offers what the case negotiates (and LOG_ALL), so
			// "no-protocol-features" is an old-style session.
			offered := c.features | vhostuser.FLogAll
			h := newHarness(t, vhostuser.Options{Features: offered})
			f := vhostusertest.New(t, c.opts)
			require.NoError(t, f.Dial(h.path))
			require.NoError(t, f.Negotiate(c.features))
			require.Equal(t, c.features, f.Features())
			require.NoError(t, f.SetupQueues(1, 256))
			layouts := []vhostusertest.Layout{vhostusertest.LayoutSplit, vhostusertest.LayoutSingle}
			if c.features&virtio.FIndirectDesc != 0 {
				layouts = append(layouts, vhostusertest.LayoutIndirect)
			}
			for _, layout := range layouts {
				for i, n := range c.sizes {
					echoOnce(t, f, 0, frame(n, byte(i)), layout)
				}
			}
			// A burst of more descriptors than the transmit ring has (the
			// frontend waits for room) but fewer frames than receive
			// chains (the echo device drops what does not fit).
			burst := c.burst
			for i := 0; i < burst; i++ {
				require.NoError(t, f.AddFrame(0, virtio.NetHdr{}, frame(64+i%512, byte(i)), vhostusertest.LayoutSplit))
				if i%16 == 15 {
					require.NoError(t, f.Flush(0))
				}
			}
			require.NoError(t, f.Flush(0))
			for i := 0; i < burst; i++ {
				got, err := f.WaitRecv()
				require.NoError(t, err)
				require.Equal(t, frame(64+i%512, byte(i)), got, "frame %d", i)
			}
			d := h.lastDevice()
			require.Nil(t, d.broken.Load())
			require.Zero(t, d.drops.Load())
		})
	}
}

// TestOffloadHeaderRoundTrip: the header the guest transmits reaches the
// device decoded, and the device's receive header reaches the guest.
func TestOffloadHeaderRoundTrip(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	f := vhostusertest.New(t, vhostusertest.Options{})
	require.NoError(t, f.Dial(h.path))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(1, 64))
	hdr := virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, GSOType: virtio.NetHdrGSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	fr := frame(3000, 9)
	require.NoError(t, f.SendFrame(0, hdr, fr, vhostusertest.LayoutIndirect))
	got, payload, err := f.WaitRecvHdr()
	require.NoError(t, err)
	require.Equal(t, fr, payload)
	want := hdr
	want.NumBuffers = got.NumBuffers
	require.Equal(t, want, got)
	require.Equal(t, uint16(2), got.NumBuffers, "3000+12 bytes in 2 KiB mergeable buffers")
}

func TestMultiQueue(t *testing.T) {
	h := newHarness(t, vhostuser.Options{QueuePairs: 4})
	f := vhostusertest.New(t, vhostusertest.Options{QueuePairs: 4, Regions: 3})
	require.NoError(t, f.Dial(h.path))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(4, 128))
	for qp := 0; qp < 4; qp++ {
		fr := frame(100+qp, byte(qp))
		require.NoError(t, f.SendFrame(qp, virtio.NetHdr{}, fr, vhostusertest.LayoutSplit))
		got, err := f.WaitRecv()
		require.NoError(t, err)
		require.Equal(t, fr, got)
		require.Equal(t, uint16(1), f.Ring(2*qp).Driver.LastUsed(), "frame of queue pair %d came back on its own receiveq", qp)
	}
}

// TestChainAcrossRegions: transmit buffers at the ends of regions and one
// descriptor that spans two regions contiguous in guest physical memory.
func TestChainAcrossRegions(t *testing.T) {
	h := newHarness(t, vhostuser.Options{})
	// Three regions for one queue pair: rings 0 and 1 sit at the start of
	// regions 0 and 1; the end of region 1 and region 2 are free.
	f := vhostusertest.New(t, vhostusertest.Options{Regions: 3, RegionSize: 4 << 20})
	require.NoError(t, f.Dial(h.path))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(1, 64))
	r1, r2 := f.Regions()[1], f.Regions()[2]
	require.Equal(t, r1.GPA+r1.Size, r2.GPA)
	tx := f.Ring(1).Driver
	for i, split := range []int{1, 300, 611} {
		fr := frame(1000, byte(i))
		buf := make([]byte, virtio.NetHdrSize+len(fr))
		copy(buf[virtio.NetHdrSize:], fr)
		copy(r1.Data[r1.Size-uint64(split):], buf[:split])
		copy(r2.Data, buf[split:])
		_, err := tx.AddElems([]virtiotest.Elem{{GPA: r2.GPA - uint64(split), Len: uint32(len(buf))}}, false)
		require.NoError(t, err)
		require.NoError(t, f.Flush(0))
		got, err := f.WaitRecv()
		require.NoError(t, err)
		require.Equal(t, fr, got, "split at %d", split)
	}
	require.Nil(t, h.lastDevice().broken.Load())
}

// BenchmarkEchoRoundTrip: frames from the Go frontend through a session to
// the echo device and back, in batches of 32 (the whole vhost-user path
// with real eventfds; the frontend and the device share the machine's
// cores).
func BenchmarkEchoRoundTrip(b *testing.B) {
	for _, size := range []int{64, 1518} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			h := newHarness(b, vhostuser.Options{Logger: slog.New(slog.DiscardHandler)})
			f := vhostusertest.New(b, vhostusertest.Options{})
			require.NoError(b, f.Dial(h.path))
			require.NoError(b, f.Negotiate(0))
			require.NoError(b, f.SetupQueues(1, 256))
			fr := frame(size, 1)
			const batch = 32
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for sent := 0; sent < b.N; {
				n := min(batch, b.N-sent)
				for i := 0; i < n; i++ {
					if err := f.AddFrame(0, virtio.NetHdr{}, fr, vhostusertest.LayoutSingle); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Flush(0); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < n; {
					k, _ := f.Drain()
					got += k
					if k == 0 {
						// Sleep on the receive call fd (spinning would
						// steal the device's core on a small machine).
						if _, err := f.WaitCall(0); err != nil {
							b.Fatalf("%d of %d frames came back: %v", got, n, err)
						}
					}
				}
				sent += n
			}
		})
	}
}
