package datapath

import (
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Guest to guest through the switch with real GuestPorts (workers running,
// virtiotest drivers playing the guests).

// transmitBig adds a frame of any size as one indirect chain of 2 KiB
// buffers and kicks.
func (r *rig) transmitBig(hdr virtio.NetHdr, frame []byte) {
	r.t.Helper()
	h := make([]byte, virtio.NetHdrLen(r.features))
	hdr.Encode(h)
	_, err := r.tx.AddChain(chop(append(h, frame...), 2048), nil, true)
	require.NoError(r.t, err)
	r.tx.Publish()
	r.txKick.Kick()
}

// noneReceived reports whether the guest's receive queue has no used
// element.
func (r *rig) noneReceived() bool {
	_, ok := r.rx.Used()
	return !ok
}

func newTestSwitch(t *testing.T, leases LeaseTable) *Switch {
	t.Helper()
	sw, err := NewSwitch(SwitchOptions{Leases: leases, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	return sw
}

func TestSwitchGuestToGuest(t *testing.T) {
	leases := newFakeLeases()
	leases.set(macA, ipA)
	leases.set(macB, ipB)
	sw := newTestSwitch(t, leases)
	f := baseFeatures | virtio.NetFMrgRxbuf
	a := newRig(t, f, GuestPortOptions{Name: "guest0"}, 2048)
	b := newRig(t, f, GuestPortOptions{Name: "guest1"}, 2048)
	c := newRig(t, baseFeatures, GuestPortOptions{Name: "guest2"}, 2048)
	for _, r := range []*rig{a, b, c} {
		_, err := sw.Attach(r.port, PortOptions{})
		require.NoError(t, err)
		r.start()
		r.postRX(32, 2048)
	}
	// b announces itself: a broadcast reaches a and c.
	ann := arpFrame(macB, macB, ipB, ipA)
	b.transmit(virtio.NetHdr{}, ann, "one")
	_, got := a.received(1)
	require.Equal(t, [][]byte{ann}, got)
	_, got = c.received(1)
	require.Equal(t, [][]byte{ann}, got)

	// a to b: unicast, b only, every layout of the transmit chain.
	var want [][]byte
	for i, layout := range []string{"one", "split", "indirect", "one", "split"} {
		fr := udp4Frame(macB, macA, ipA, ipB, 1000, 2000, 100+300*i)
		want = append(want, fr)
		a.transmit(virtio.NetHdr{}, fr, layout)
	}
	hdrs, got := b.received(5)
	require.Equal(t, want, got)
	for _, h := range hdrs {
		require.EqualValues(t, 1, h.NumBuffers)
	}
	a.usedTX(5)
	require.True(t, c.noneReceived(), "a unicast was flooded")

	// a spoofs b's IP: dropped and counted on a.
	a.transmit(virtio.NetHdr{}, udp4Frame(macB, macA, ipB, ipA, 1, 2, 10), "one")
	a.usedTX(1)
	require.EqualValues(t, 1, a.port.Stats().Drops(DropSpoof))
	require.True(t, b.noneReceived())

	require.EqualValues(t, 6, a.port.Stats().RxPackets.Load())
	require.EqualValues(t, 1, a.port.Stats().TxPackets.Load())
	require.EqualValues(t, 5, b.port.Stats().TxPackets.Load())
	require.EqualValues(t, 1, b.port.Stats().RxPackets.Load())
}

// TestSwitchGuestToGuestOffloads sends TSO and partially checksummed
// frames from a guest with the HOST_ offloads to guests with and without
// the GUEST_ ones: carried over where negotiated, segmented or completed in
// software where not.
func TestSwitchGuestToGuestOffloads(t *testing.T) {
	leases := newFakeLeases()
	leases.set(macA, ipA)
	sw := newTestSwitch(t, leases)
	mrg := baseFeatures | virtio.NetFMrgRxbuf
	a := newRig(t, mrg|virtio.NetFCsum|virtio.NetFHostTSO4|virtio.NetFHostTSO6, GuestPortOptions{Name: "sender"}, 2048)
	plain := newRig(t, mrg, GuestPortOptions{Name: "plain"}, 2048)
	csum := newRig(t, mrg|virtio.NetFGuestCsum, GuestPortOptions{Name: "csum"}, 2048)
	tso := newRig(t, mrg|virtio.NetFGuestCsum|virtio.NetFGuestTSO4, GuestPortOptions{Name: "tso"}, 2048)
	_, err := sw.Attach(a.port, PortOptions{MAC: macA})
	require.NoError(t, err)
	a.start()
	dsts := map[*rig]header.MAC{plain: macB, csum: macC, tso: macX}
	for r, mac := range dsts {
		_, err := sw.Attach(r.port, PortOptions{MAC: mac})
		require.NoError(t, err)
		r.start()
		r.postRX(128, 2048)
	}
	for _, v6 := range []bool{false, true} {
		for r, mac := range dsts {
			spec := gsoSpec{payload: 20000, mss: 1448, v6: v6, flags: header.TCPFlagACK | header.TCPFlagPSH}
			frame, h := tcpGSOFrame(spec, macA, mac)
			a.transmitBig(h, frame)
			n := (spec.payload + 1447) / 1448
			switch {
			case r == tso && !v6: // carried over as it is
				hdrs, got := r.received(1)
				require.Equal(t, string(frame), string(got[0]))
				hdrs[0].NumBuffers = 0
				require.Equal(t, h, hdrs[0])
			case r == plain:
				hdrs, got := r.received(n)
				checkTCPSegments(t, frame, h, got, hdrs, false)
			default: // GUEST_CSUM: segments with partial checksums
				hdrs, got := r.received(n)
				checkTCPSegments(t, frame, h, got, hdrs, true)
			}
		}
	}
	// A partial checksum without GSO is completed for plain only.
	fr := udp4Frame(macB, macA, ipA, ipB, 1, 2, 333)
	u := header.UDP(fr[34:])
	u.SetChecksum(header.IPv4(fr[14:]).PseudoHeaderChecksum(header.ProtoUDP, uint16(len(fr)-34)))
	a.transmit(virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}, fr, "split")
	hdrs, got := plain.received(1)
	require.Zero(t, hdrs[0].Flags)
	require.Equal(t, uint16(0xffff), header.Checksum(got[0][34:], header.IPv4(got[0][14:]).PseudoHeaderChecksum(header.ProtoUDP, uint16(len(fr)-34))))
	// To a guest with GUEST_CSUM the header goes as it is, in a batch
	// among plain frames too (the receive path's one-buffer batch): frames
	// of one transmit batch, partial checksum, plain, partial, each whole
	// and in order.
	for _, r := range []*rig{csum, tso} {
		mac := dsts[r]
		fc := append([]byte{}, fr...)
		copy(fc[0:6], mac[:])
		fp := udp4Frame(dsts[r], macA, ipA, ipB, 3, 4, 100)
		want := virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}
		_, err := a.tx.AddOut(hdrBytes(a, want), fc)
		require.NoError(t, err)
		_, err = a.tx.AddOut(hdrBytes(a, virtio.NetHdr{}), fp)
		require.NoError(t, err)
		_, err = a.tx.AddOut(hdrBytes(a, want), fc)
		require.NoError(t, err)
		a.tx.Publish()
		a.txKick.Kick()
		hdrs, got := r.received(3)
		for i, w := range []struct {
			hdr   virtio.NetHdr
			frame []byte
		}{{want, fc}, {virtio.NetHdr{}, fp}, {want, fc}} {
			w.hdr.NumBuffers = 1
			require.Equal(t, w.hdr, hdrs[i], "frame %d", i)
			require.Equal(t, string(w.frame), string(got[i]), "frame %d", i)
		}
	}
	require.Zero(t, a.port.Stats().Drops(DropMalformed)+a.port.Stats().Drops(DropSpoof))
}

// hdrBytes returns hdr encoded as r's guest sends it (NetHdrLen of its
// features).
func hdrBytes(r *rig, hdr virtio.NetHdr) []byte {
	h := make([]byte, virtio.NetHdrLen(r.features))
	hdr.Encode(h[:min(len(h), virtio.NetHdrSize)])
	return h
}

// echoHandler records the frames it gets and answers each with a frame
// from the gateway's MAC to the sender, from its own goroutine every other
// time.
type echoHandler struct {
	mu     sync.Mutex
	frames [][]byte
	ptrs   []*byte
	wg     sync.WaitGroup
}

func (h *echoHandler) HandleFrame(frame []byte, reply func([]byte)) {
	h.mu.Lock()
	h.frames = append(h.frames, append([]byte{}, frame...))
	h.ptrs = append(h.ptrs, &frame[0])
	odd := len(h.frames)%2 == 1
	h.mu.Unlock()
	answer := ethFrame(header.Ethernet(frame).Src(), macGW, 0x88b5, frame[14:])
	if odd {
		reply(answer)
		return
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		reply(answer)
	}()
}

func TestHandlerPort(t *testing.T) {
	leases := newFakeLeases()
	leases.set(macA, ipA)
	sw := newTestSwitch(t, leases)
	h := &echoHandler{}
	hp := NewHandlerPort("gateway", h)
	_, err := sw.Attach(hp, PortOptions{MAC: macGW, AllowSpoofing: true})
	require.NoError(t, err)
	a := newCapPort("a")
	spA, err := sw.Attach(a, PortOptions{MAC: macA})
	require.NoError(t, err)

	// A partial checksum is completed in the handler's private copy.
	fr := udp4Frame(macGW, macA, ipA, ipGW, 1, 53, 40)
	want := append([]byte{}, fr...)
	u := header.UDP(fr[34:])
	u.SetChecksum(header.IPv4(fr[14:]).PseudoHeaderChecksum(header.ProtoUDP, uint16(len(fr)-34)))
	f := frameOf(fr[:20], fr[20:])
	f.Hdr = virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 6}
	spA.Send([]Frame{f, frameOf(want)})
	// A TSO frame is segmented for it.
	g, gh := tcpGSOFrame(gsoSpec{payload: 5000, mss: 1448, flags: header.TCPFlagACK}, macA, macGW)
	gf := frameOf(g)
	gf.Hdr = gh
	spA.Send([]Frame{gf})
	h.wg.Wait()

	require.Len(t, h.frames, 6)
	require.Equal(t, want, h.frames[0])
	require.Equal(t, want, h.frames[1])
	require.NotSame(t, &fr[0], h.ptrs[0])
	checkTCPSegments(t, g, gh, h.frames[2:], make([]virtio.NetHdr, 4), false)
	require.Equal(t, 6, a.Count(), "every reply reached the sender")
	for _, r := range a.Frames() {
		require.Equal(t, macGW, header.Ethernet(r).Src())
	}
	require.EqualValues(t, 6, hp.Stats().TxPackets.Load())
	require.EqualValues(t, 6, hp.Stats().RxPackets.Load())
	require.Equal(t, RxOffloads{}, hp.RxOffloads())

	// Frames the handler cannot take: a runt, a checksum outside the frame.
	bad := frameOf(make([]byte, 60))
	bad.Hdr = virtio.NetHdr{Flags: virtio.NetHdrFNeedsCsum, CsumStart: 59, CsumOffset: 6}
	hp.Send([]Frame{frameOf([]byte{1, 2}), bad})
	require.EqualValues(t, 2, hp.Stats().Drops(DropMalformed))

	// Without a peer, replies are dropped.
	hp.SetPeer(nil)
	hp.Send([]Frame{frameOf(want)})
	require.EqualValues(t, 1, hp.Stats().Drops(DropNoRoute))
	h.wg.Wait()
}

func TestGuestPortRxOffloads(t *testing.T) {
	r := newRig(t, baseFeatures|virtio.NetFGuestCsum|virtio.NetFGuestTSO6|virtio.NetFGuestECN, GuestPortOptions{QueuePairs: 2}, 2048)
	require.Equal(t, RxOffloads{}, r.port.RxOffloads(), "no receive queue yet")
	r.start()
	o := r.port.RxOffloads()
	require.Equal(t, RxOffloads{Csum: true, TSO6: true, ECN: true}, o)
	require.True(t, o.AcceptsGSO(virtio.NetHdrGSOTCPv6|virtio.NetHdrGSOECN))
	require.False(t, o.AcceptsGSO(virtio.NetHdrGSOTCPv4))
	require.True(t, o.AcceptsGSO(virtio.NetHdrGSONone))
}
