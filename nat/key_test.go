package nat

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// refCsumDelta is the checksum delta of rewriting key from to key to,
// field by field (RFC 1624 §3: ~old + new over every 16-bit word that
// changes place or value), as the engine computed it before it worked on
// words.
func refCsumDelta(from, to *flowKey) (addr, port uint16) {
	s := uint64(^uint16(from.Src>>16)) + uint64(^uint16(from.Src)) + uint64(uint16(to.Src>>16)) + uint64(uint16(to.Src)) +
		uint64(^uint16(from.Dst>>16)) + uint64(^uint16(from.Dst)) + uint64(uint16(to.Dst>>16)) + uint64(uint16(to.Dst))
	p := uint64(^from.SrcPort) + uint64(to.SrcPort) + uint64(^from.DstPort) + uint64(to.DstPort)
	return fold(s), fold(p)
}

// TestKeyWords checks the word forms of the new-flow path against the
// struct fields they stand for: replyWords is the reversed key with the
// reply's side, dnatWords replaces the destination, setWords inverts
// words, and setKeysWords stores the deltas refCsumDelta gives for
// rewriting each direction to the reverse of the other.
func TestKeyWords(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	keys := []flowKey{
		{},
		{Src: 0xffffffff, Dst: 0xffffffff, SrcPort: 0xffff, DstPort: 0xffff, Proto: ICMP, Side: Uplink},
		{Src: 0x0a000001, Dst: 0x08080808, SrcPort: 40000, DstPort: 53, Proto: UDP, Side: Guest},
		{Src: 0xc0a87f05, Dst: 0xc6336401, SrcPort: 7, Proto: ICMP, Side: Guest},
	}
	for range 5000 {
		keys = append(keys, flowKey{Src: addr(r.Uint32()), Dst: addr(r.Uint32()), SrcPort: uint16(r.Uint32()),
			DstPort: uint16(r.Uint32()), Proto: []Proto{TCP, UDP, ICMP}[r.IntN(3)], Side: Side(r.IntN(2))})
	}
	for i, k := range keys {
		w0, w1 := k.words()
		var back flowKey
		back.setWords(w0, w1)
		require.Equal(t, k, back, "key %d", i)

		for _, side := range []Side{Guest, Uplink} {
			want := k.reverse()
			want.Side = side
			r0, r1 := replyWords(w0, w1, side)
			require.Equal(t, want, keyOf(r0, r1), "key %d side %d", i, side)
		}

		hp := hostPort{addr: addr(r.Uint32()), port: uint16(r.Uint32())}
		want := k
		want.Dst, want.DstPort = hp.addr, hp.port
		require.Equal(t, want, keyOf(dnatWords(w0, w1, hp)), "key %d", i)

		other := keys[(i+1)%len(keys)]
		var f flow
		f.setKeys(&k, &other)
		t0, t1 := other.reverse(), k.reverse()
		da0, dp0 := refCsumDelta(&k, &t0)
		da1, dp1 := refCsumDelta(&other, &t1)
		for d, wantA := range []uint16{da0, da1} {
			a, p := deltas(f.delta.Load(), uint32(d))
			require.Equal(t, wantA, a, "key %d direction %d address delta", i, d)
			require.Equal(t, []uint16{dp0, dp1}[d], p, "key %d direction %d port delta", i, d)
		}
	}
}
