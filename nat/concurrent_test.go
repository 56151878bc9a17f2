package nat

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/datapath/header"
	"github.com/arcnet/vhost-arcnet/datapath/header/headertest"
	"github.com/arcnet/vhost-arcnet/internal/testclock"
	"github.com/stretchr/testify/require"
)

// TestConcurrentTranslate runs two goroutines translating packets without
// the engine's lock while a third changes the table under it, and checks
// every packet's translation against its flow, checksums included (a packet
// translated with the keys of one flow and the deltas of another, or with a
// record reused under it, has a wrong address, port or checksum). Run with
// -race: the lock-free path must read nothing the lock holders write
// without synchronisation.
//
//   - Long-lived TCP flows (established, 1 h timeout) above prefetchMinFlows,
//     so that the batch passes run: always translated, both directions.
//   - Short-lived UDP flows (1 s timeout) that the translators open and
//     refresh on the lock-free path while the third goroutine moves the
//     clock, expires them (Translate's wheel and Expire) and snapshots the
//     table; their records are reclaimed and reused all the time.
func TestConcurrentTranslate(t *testing.T) {
	const (
		nTCP    = prefetchMinFlows + 2000
		nUDP    = 2048
		rounds  = 300
		workers = 2
	)
	clk := testclock.New(time.Unix(1_000_000, 0))
	e, err := New(Config{External: benchExt, GuestPrefix: benchPrefix, MaxFlows: 1 << 16,
		MaxFlowsPerGuest: 1 << 16, Clock: clk.Now,
		Timeouts: Timeouts{TCPEstablished: time.Hour, UDP: time.Second, UDPStream: time.Second}})
	require.NoError(t, err)
	establish(t, e, nTCP)

	extAP := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(benchExt, port) }
	udpGuest := func(j int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 2, byte(j)}), uint16(30000+j))
	}
	udpRemote := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 65, 0, 1}), 53)
	tcpGuest := func(j int) netip.AddrPort {
		a, p := benchGuest(j)
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), p)
	}
	tcpRemote := func(j int) netip.AddrPort {
		a := benchRemote(j)
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), 443)
	}

	var translated, steps atomic.Uint64
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ps := make([]Packet, maxBatch)
			type want struct {
				src, dst netip.AddrPort
				must     bool // an established TCP flow: must be translated
			}
			wants := make([]want, maxBatch)
			seed := uint64(w + 1)
			rnd := func(n int) int {
				seed = seed*6364136223846793005 + 1442695040888963407
				return int((seed >> 33) % uint64(n))
			}
			// At least rounds batches, and until the clock has moved past
			// the UDP timeout several times.
			for round := 0; round < rounds || steps.Load() < 20; round++ {
				from := Side(round & 1)
				size := 1 + rnd(maxBatch)
				for i := range ps[:size] {
					var p pkt
					if rnd(4) == 0 {
						// UDP: the guest's port is kept (ports are unique),
						// so both directions are known exactly.
						j := rnd(nUDP)
						p = pkt{proto: UDP, src: udpGuest(j), dst: udpRemote}
						wants[i] = want{extAP(udpGuest(j).Port()), udpRemote, false}
						if from == Uplink {
							p = pkt{proto: UDP, src: udpRemote, dst: extAP(udpGuest(j).Port())}
							wants[i] = want{udpRemote, udpGuest(j), false}
						}
					} else {
						j := rnd(nTCP)
						p = pkt{proto: TCP, src: tcpGuest(j), dst: tcpRemote(j), flags: tcpACK}
						wants[i] = want{extAP(tcpGuest(j).Port()), tcpRemote(j), true}
						if from == Uplink {
							p = pkt{proto: TCP, src: tcpRemote(j), dst: extAP(tcpGuest(j).Port()), flags: tcpACK}
							wants[i] = want{tcpRemote(j), tcpGuest(j), true}
						}
					}
					ps[i] = Packet{Buf: append(ps[i].Buf[:0], p.build()...)}
				}
				e.Translate(from, ps[:size])
				for i := range ps[:size] {
					p, wt := &ps[i], wants[i]
					if p.Verdict == Drop {
						if wt.must {
							t.Errorf("worker %d round %d packet %d: dropped (%v), want %v -> %v", w, round, i, p.Reason, wt.src, wt.dst)
							return
						}
						continue
					}
					translated.Add(1)
					if err := checkTranslated(p.Buf, wt.src, wt.dst); err != nil {
						t.Errorf("worker %d round %d packet %d: %v", w, round, i, err)
						return
					}
				}
			}
		}()
	}
	var churn sync.WaitGroup
	churn.Add(1)
	var snaps, restored int
	go func() {
		defer churn.Done()
		var buf []byte
		for {
			select {
			case <-done:
				return
			default:
			}
			clk.Advance(300 * time.Millisecond)
			e.Expire()
			if steps.Add(1)%4 != 0 {
				continue
			}
			var n int
			buf, n = e.AppendSnapshot(buf[:0])
			e2 := benchEngine(t, 1<<16)
			st, err := e2.Restore(buf)
			if err != nil {
				t.Errorf("restore: %v", err)
				return
			}
			snaps++
			restored += st.Restored
			if st.Restored+st.Refused+st.Expired != n {
				t.Errorf("snapshot of %d flows: %+v", n, st)
				return
			}
		}
	}()
	wg.Wait()
	close(done)
	churn.Wait()
	if t.Failed() {
		return
	}
	s := e.Stats()
	require.Equal(t, uint64(nTCP), s.TCPStates[TCPEstablished], "established flows")
	require.Equal(t, uint64(e.Len()), s.FlowsTCP+s.FlowsUDP+s.FlowsICMP, "live flows")
	require.Positive(t, s.Expired, "no UDP flow expired: the test misses reclaim and reuse")
	require.Positive(t, snaps)
	require.GreaterOrEqual(t, restored, snaps*nTCP, "every snapshot holds the TCP flows")
	// Every packet translated was counted once (setup: 3 packets per TCP flow).
	require.Equal(t, translated.Load()+3*nTCP, s.Outbound+s.Inbound)
	checkRecords(t, e)
}

// checkRecords checks every flow record against the index: a live one
// (word not 0) is found under both its keys, and their number is Len (a
// packet that raced with a reclaim did not bring a free record back).
func checkRecords(t *testing.T, e *Engine) {
	live := 0
	for c := range e.tab.chunks {
		chunk := e.tab.dir[c].Load()
		for j := range chunk {
			f := &chunk[j]
			i := uint32(c<<chunkShift | j)
			if f.word.Load() == 0 {
				continue // free
			}
			live++
			for d := range uint32(2) {
				k := f.key(d)
				require.Equal(t, i<<1|d, e.tab.lookup(&k, k.hash(&e.tab.seed)), "record %d direction %d", i, d)
			}
		}
	}
	require.Equal(t, e.Len(), live, "live records")
}

// checkTranslated checks the addresses, ports and checksums of a translated
// TCP or UDP packet, returning an error (it runs off the test goroutine).
func checkTranslated(b []byte, src, dst netip.AddrPort) error {
	ip := header.IPv4(b)
	got := [2]netip.AddrPort{netip.AddrPortFrom(ip.Src(), binary.BigEndian.Uint16(b[20:])),
		netip.AddrPortFrom(ip.Dst(), binary.BigEndian.Uint16(b[22:]))}
	if got != [2]netip.AddrPort{src, dst} {
		return fmt.Errorf("translated to %v -> %v, want %v -> %v", got[0], got[1], src, dst)
	}
	if c := headertest.RefChecksum(b[:20], 0); c != 0xffff {
		return fmt.Errorf("IPv4 header checksum: sum %04x", c)
	}
	l4 := b[20:ip.TotalLength()]
	if b[9] == 17 && binary.BigEndian.Uint16(l4[6:]) == 0 {
		return nil
	}
	ph := header.PseudoHeaderChecksum(b[9], ip.Src(), ip.Dst(), uint16(len(l4)))
	if c := headertest.RefChecksum(l4, ph); c != 0xffff {
		return fmt.Errorf("transport checksum: sum %04x", c)
	}
	return nil
}
