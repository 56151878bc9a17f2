package virtio_test

import (
	"bytes"
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
	"github.com/stretchr/testify/require"
)

// frame returns n bytes of a recognisable pattern.
func frame(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

// split cuts b into pieces of at most k bytes (a scatter list).
func split(b []byte, k int) [][]byte {
	var out [][]byte
	for len(b) > k {
		out = append(out, b[:k])
		b = b[k:]
	}
	return append(out, b)
}

func TestNetRXSingle(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		hdrLen   int
		bufs     []uint32 // one chain with these device-writable buffers
		frame    int
	}{
		{"one buffer", virtio.FVersion1, 12, []uint32{2048}, 1514},
		{"exact fit", virtio.FVersion1, 12, []uint32{76}, 64},
		{"header and data split", virtio.FVersion1, 12, []uint32{12, 1024, 1024}, 2000},
		{"header split", virtio.FVersion1, 12, []uint32{5, 7, 100}, 60},
		{"legacy header", 0, 10, []uint32{2048}, 1514},
		{"legacy header alone in a buffer", 0, 10, []uint32{10, 200}, 150},
		{"legacy header split", 0, 10, []uint32{4, 6, 200}, 150},
		{"header in a larger first buffer", virtio.FVersion1, 12, []uint32{40, 100}, 120},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, 8, tc.features)
			rx := virtio.NewNetRX(p.q)
			require.False(t, rx.Mergeable())
			head, err := p.d.AddIn(tc.bufs...)
			require.NoError(t, err)
			p.d.Publish()
			f := frame(tc.frame)
			hdr := virtio.NetHdr{Flags: virtio.NetHdrFDataValid, GSOType: virtio.NetHdrGSONone, HdrLen: 1, GSOSize: 2, CsumStart: 3, CsumOffset: 4, NumBuffers: 99}
			ok, err := rx.Write(hdr, split(f, 100))
			require.NoError(t, err)
			require.True(t, ok)
			p.q.Publish()
			e, ok := p.d.Used()
			require.True(t, ok)
			require.Equal(t, uint32(head), e.ID)
			require.Equal(t, uint32(tc.hdrLen+tc.frame), e.Len)
			got := make([]byte, e.Len)
			require.Equal(t, int(e.Len), p.d.ReadIn(head, got))
			var h virtio.NetHdr
			var raw [virtio.NetHdrSize]byte
			copy(raw[:], got[:tc.hdrLen])
			h.Decode(raw[:])
			want := hdr
			want.NumBuffers = 1 // virtio 1.2 §5.1.6.4.1
			if tc.hdrLen == 10 {
				want.NumBuffers = 0
			}
			require.Equal(t, want, h)
			require.Equal(t, f, got[tc.hdrLen:])
		})
	}
}

func TestNetRXSingleDoesNotFit(t *testing.T) {
	p := newPair(t, 8, virtio.FVersion1)
	rx := virtio.NewNetRX(p.q)
	ok, err := rx.Write(virtio.NetHdr{}, [][]byte{frame(10)})
	require.NoError(t, err)
	require.False(t, ok)
	require.False(t, rx.TooBig(), "no buffers at all")

	_, err = p.d.AddIn(100)
	require.NoError(t, err)
	p.d.Publish()
	ok, err = rx.Write(virtio.NetHdr{}, [][]byte{frame(89)})
	require.NoError(t, err)
	require.False(t, ok)
	require.True(t, rx.TooBig())
	require.Equal(t, uint16(0), p.q.LastAvail(), "un-popped")
	p.q.Publish()
	require.Equal(t, uint16(0), p.d.UsedIdx(), "nothing pushed")
	ok, err = rx.Write(virtio.NetHdr{}, [][]byte{frame(88)})
	require.NoError(t, err)
	require.True(t, ok)
	require.False(t, rx.TooBig())
}

func TestNetRXMergeable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chains [][]uint32 // each chain: its buffer lengths
		frame  int
		used   []uint32 // expected used lengths, one per chain used
	}{
		{"fits in one", [][]uint32{{2048}, {2048}}, 1000, []uint32{1012}},
		{"four chains", [][]uint32{{256}, {256}, {256}, {256}, {256}}, 1000, []uint32{256, 256, 256, 244}},
		{"exact", [][]uint32{{256}, {256}}, 500, []uint32{256, 256}},
		{"multi-buffer chains", [][]uint32{{12, 100}, {50, 50, 50}, {1000}}, 300, []uint32{112, 150, 50}},
		{"header only chain", [][]uint32{{12}, {100}}, 50, []uint32{12, 50}},
		{"empty frame", [][]uint32{{64}}, 0, []uint32{12}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, 16, virtio.FVersion1|virtio.NetFMrgRxbuf)
			rx := virtio.NewNetRX(p.q)
			require.True(t, rx.Mergeable())
			heads := addChains(t, p.d, tc.chains)
			f := frame(tc.frame)
			ok, err := rx.Write(virtio.NetHdr{GSOType: virtio.NetHdrGSOTCPv4, GSOSize: 1448}, split(f, 77))
			require.NoError(t, err)
			require.True(t, ok)
			p.q.Publish()
			all := usedChains(t, p.d, heads, tc.used)
			require.Equal(t, uint16(len(tc.used)), p.q.LastAvail())
			var h virtio.NetHdr
			h.Decode(all)
			require.Equal(t, uint16(len(tc.used)), h.NumBuffers)
			require.Equal(t, uint16(1448), h.GSOSize)
			require.True(t, bytes.Equal(f, all[12:]))
		})
	}
}

// addChains adds one receive chain per entry of chains (its buffer
// lengths), publishes them and returns their heads.
func addChains(t *testing.T, d *virtiotest.Driver, chains [][]uint32) []uint16 {
	t.Helper()
	var heads []uint16
	for _, c := range chains {
		h, err := d.AddIn(c...)
		require.NoError(t, err)
		heads = append(heads, h)
	}
	d.Publish()
	return heads
}

// usedChains takes the used elements of the chains heads, in order, each of
// the length in lens, checks that no other is used, and returns the bytes
// written into them, concatenated.
func usedChains(t *testing.T, d *virtiotest.Driver, heads []uint16, lens []uint32) []byte {
	t.Helper()
	var all []byte
	for i, want := range lens {
		e, ok := d.Used()
		require.True(t, ok)
		require.Equal(t, uint32(heads[i]), e.ID)
		require.Equal(t, want, e.Len)
		b := make([]byte, e.Len)
		d.ReadIn(heads[i], b)
		all = append(all, b...)
	}
	_, ok := d.Used()
	require.False(t, ok, "no other chain used")
	return all
}

func TestNetRXMergeableNotEnough(t *testing.T) {
	p := newPair(t, 16, virtio.FVersion1|virtio.NetFMrgRxbuf)
	rx := virtio.NewNetRX(p.q)
	for range 2 {
		_, err := p.d.AddIn(256)
		require.NoError(t, err)
	}
	p.d.Publish()
	ok, err := rx.Write(virtio.NetHdr{}, [][]byte{frame(1000)})
	require.NoError(t, err)
	require.False(t, ok)
	require.False(t, rx.TooBig())
	require.Equal(t, uint16(0), p.q.LastAvail(), "every chain un-popped")
	for range 2 {
		_, err := p.d.AddIn(256)
		require.NoError(t, err)
	}
	p.d.Publish()
	ok, err = rx.Write(virtio.NetHdr{}, [][]byte{frame(1000)})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, uint16(4), p.q.LastAvail())
}

func TestNetRXMergeableNeverFits(t *testing.T) {
	p := newPair(t, 4, virtio.FVersion1|virtio.NetFMrgRxbuf)
	rx := virtio.NewNetRX(p.q)
	for range 4 {
		_, err := p.d.AddIn(100)
		require.NoError(t, err)
	}
	p.d.Publish()
	ok, err := rx.Write(virtio.NetHdr{}, [][]byte{frame(389)})
	require.NoError(t, err)
	require.False(t, ok)
	require.True(t, rx.TooBig(), "4 buffers of 100 bytes can never hold 12+389")
	require.Equal(t, uint16(0), p.q.LastAvail())
	ok, err = rx.Write(virtio.NetHdr{}, [][]byte{frame(388)})
	require.NoError(t, err)
	require.True(t, ok)
}

func TestNetRXHostile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		setup    func(d *virtiotest.Driver)
	}{
		{"readable receive buffer", virtio.FVersion1, func(d *virtiotest.Driver) {
			_, _ = d.AddChain([][]byte{[]byte("x")}, []uint32{2048}, false)
		}},
		{"readable receive buffer, mergeable", virtio.FVersion1 | virtio.NetFMrgRxbuf, func(d *virtiotest.Driver) {
			_, _ = d.AddIn(100)
			_, _ = d.AddOut([]byte("x"))
		}},
		{"first mergeable buffer shorter than the header", virtio.FVersion1 | virtio.NetFMrgRxbuf, func(d *virtiotest.Driver) {
			_, _ = d.AddIn(11)
			_, _ = d.AddIn(2048)
		}},
		{"buffer outside memory", virtio.FVersion1 | virtio.NetFMrgRxbuf, func(d *virtiotest.Driver) {
			_, _ = d.AddIn(100)
			_, _ = d.AddElems([]virtiotest.Elem{{GPA: 0, Len: 100, Write: true}}, false)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, 8, tc.features)
			rx := virtio.NewNetRX(p.q)
			tc.setup(p.d)
			p.d.Publish()
			ok, err := rx.Write(virtio.NetHdr{}, [][]byte{frame(1000)})
			require.False(t, ok)
			require.ErrorIs(t, err, virtio.ErrBroken)
			p.q.Publish()
			require.Equal(t, uint16(0), p.d.UsedIdx())
		})
	}
}

// writeZeroHdr writes payload with a header of zeros: by WritePlain if
// plain, else by Write (the two must write the same).
func writeZeroHdr(rx *virtio.NetRX, plain bool, payload [][]byte) (bool, error) {
	if plain {
		return rx.WritePlain(payload)
	}
	return rx.Write(virtio.NetHdr{}, payload)
}

// TestNetRXWritePlain checks that WritePlain writes exactly what Write
// writes with a header of zeros (num_buffers aside, which both set), in
// every layout of the header: one buffer, header alone, header split,
// legacy header, several mergeable chains, split and packed rings.
func TestNetRXWritePlain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		chains   [][]uint32
		frame    int
	}{
		{"one buffer", virtio.FVersion1, [][]uint32{{2048}}, 64},
		{"header alone", virtio.FVersion1, [][]uint32{{12, 100}}, 64},
		{"header split", virtio.FVersion1, [][]uint32{{5, 7, 100}}, 64},
		{"legacy", 0, [][]uint32{{2048}}, 64},
		{"legacy split", 0, [][]uint32{{3, 200}}, 64},
		{"mergeable one chain", virtio.FVersion1 | virtio.NetFMrgRxbuf, [][]uint32{{2048}}, 1514},
		{"mergeable three chains", virtio.FVersion1 | virtio.NetFMrgRxbuf, [][]uint32{{100}, {100}, {100}}, 250},
		{"one buffer, event idx", virtio.FVersion1 | virtio.FEventIdx, [][]uint32{{2048}}, 64},
		{"exact fit", virtio.FVersion1, [][]uint32{{76}}, 64},
		{"mergeable first chain too small", virtio.FVersion1 | virtio.NetFMrgRxbuf | virtio.FEventIdx, [][]uint32{{40}, {100}}, 64},
		{"mergeable exact fit", virtio.FVersion1 | virtio.NetFMrgRxbuf, [][]uint32{{76}}, 64},
		{"packed one buffer", virtio.FVersion1 | virtio.FRingPacked, [][]uint32{{2048}}, 64},
		{"packed mergeable three chains", virtio.FVersion1 | virtio.FRingPacked | virtio.NetFMrgRxbuf, [][]uint32{{100}, {100}, {100}}, 250},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out [2][]byte
			var logs [2][]byte
			var after [2][2]uint16
			for i, plain := range []bool{false, true} {
				packed := tc.features&virtio.FRingPacked != 0
				p := newPair(t, 8, tc.features, virtiotest.DriverOptions{SlotSize: 2048, Packed: packed})
				logs[i] = make([]byte, 64)
				p.q.SetLog(virtio.NewDirtyLog(logs[i]))
				rx := virtio.NewNetRX(p.q)
				heads := addChains(t, p.d, tc.chains)
				payload := split(frame(tc.frame), 50)
				ok, err := writeZeroHdr(rx, plain, payload)
				require.NoError(t, err)
				require.True(t, ok)
				p.q.Publish()
				for range heads {
					e, ok := p.d.Used()
					require.True(t, ok)
					b := make([]byte, e.Len)
					p.d.ReadIn(uint16(e.ID), b)
					out[i] = append(out[i], b...)
				}
				_, ok = p.d.Used()
				require.False(t, ok, "every chain used, no more")
				after[i] = [2]uint16{p.q.LastAvail(), 0}
				if tc.features&virtio.FEventIdx != 0 && !packed {
					after[i][1] = p.d.AvailEvent()
				}
			}
			require.Equal(t, out[0], out[1])
			require.Equal(t, after[0], after[1], "last avail, avail_event")
			require.Equal(t, logs[0], logs[1], "dirty log")
			require.NotEqual(t, make([]byte, 64), logs[1], "dirty log marked")
			hl := virtio.NetHdrLen(tc.features)
			require.Equal(t, frame(tc.frame), out[1][hl:])
			var h virtio.NetHdr
			var raw [virtio.NetHdrSize]byte
			copy(raw[:], out[1][:hl])
			h.Decode(raw[:])
			want := virtio.NetHdr{NumBuffers: uint16(len(tc.chains))}
			if hl == virtio.NetHdrSizeLegacy {
				want.NumBuffers = 0
			}
			require.Equal(t, want, h)
		})
	}
}

// TestNetRXWritePlainDoesNotFit: a single receive buffer too small for the
// frame is not taken by WritePlain's one-buffer path either: nothing is
// consumed, and without VIRTIO_NET_F_MRG_RXBUF the frame is too big.
func TestNetRXWritePlainDoesNotFit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		tooBig   bool
	}{
		{"single", virtio.FVersion1, true},
		{"mergeable", virtio.FVersion1 | virtio.NetFMrgRxbuf, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, 8, tc.features)
			rx := virtio.NewNetRX(p.q)
			_, err := p.d.AddIn(75)
			require.NoError(t, err)
			p.d.Publish()
			ok, err := rx.WritePlain([][]byte{frame(64)})
			require.NoError(t, err)
			require.False(t, ok)
			require.Equal(t, tc.tooBig, rx.TooBig())
			require.Equal(t, uint16(0), p.q.LastAvail())
			p.q.Publish()
			require.Equal(t, uint16(0), p.d.UsedIdx())
			ok, err = rx.WritePlain([][]byte{frame(63)})
			require.NoError(t, err)
			require.True(t, ok)
		})
	}
}
