package vhostusertest_test

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
	"github.com/arcnet/vhost-arcnet/virtio"
)

// udpFrame is an Ethernet/IPv4/UDP frame of 64 bytes from source port
// sport, with seq in its payload (no checksums: nothing checks them).
func udpFrame(sport uint16, seq uint32) []byte {
	b := make([]byte, 64)
	copy(b, []byte{0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00})
	ip := b[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], 50)
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], 7)
	binary.BigEndian.PutUint16(ip[24:], 30)
	binary.BigEndian.PutUint32(ip[28:], seq)
	return b
}

// TestFrontendGoroutinePerPair drives two queue pairs of one Frontend from
// two goroutines at once (run it with -race): each sends its own flows on
// its transmitq and receives them back on its receiveq, in order, through
// a loopback port that steers replies to the pair that transmitted the flow
// (datapath/steer.go).
func TestFrontendGoroutinePerPair(t *testing.T) {
	const pairs, flows, rounds = 2, 8, 200
	path := loopbackServer(t, pairs)
	f := vhostusertest.New(t, vhostusertest.Options{QueuePairs: pairs, Timeout: 30 * time.Second})
	require.NoError(t, f.Dial(path))
	require.NoError(t, f.Negotiate(0))
	require.NotZero(t, f.Features()&virtio.NetFMQ, "VIRTIO_NET_F_MQ not negotiated")
	require.NoError(t, f.SetupQueues(pairs, 256))

	var wg sync.WaitGroup
	errs := make([]error, pairs)
	for qp := 0; qp < pairs; qp++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[qp] = pingPair(f, qp, flows, rounds)
		}()
	}
	wg.Wait()
	for qp, err := range errs {
		require.NoError(t, err, "queue pair %d", qp)
	}
}

// pingPair sends rounds batches of one frame per flow on queue pair qp (its
// own source ports) and checks that each comes back on qp, in order.
func pingPair(f *vhostusertest.Frontend, qp, flows, rounds int) error {
	next := make([]uint32, flows)
	for r := 0; r < rounds; r++ {
		for fl := 0; fl < flows; fl++ {
			if err := f.AddFrame(qp, virtio.NetHdr{}, udpFrame(uint16(1000*(qp+1)+fl), uint32(r)), vhostusertest.LayoutSingle); err != nil {
				return err
			}
		}
		if err := f.Flush(qp); err != nil {
			return err
		}
		deadline := time.Now().Add(20 * time.Second)
		for got := 0; got < flows; {
			_, b, ok := f.RecvOn(qp)
			if !ok {
				if time.Now().After(deadline) {
					return fmt.Errorf("round %d: %d of %d frames back", r, got, flows)
				}
				f.Calls(2 * qp)
				time.Sleep(50 * time.Microsecond)
				continue
			}
			sport := binary.BigEndian.Uint16(b[34:])
			fl := int(sport) - 1000*(qp+1)
			if fl < 0 || fl >= flows {
				return fmt.Errorf("frame of source port %d on receiveq %d", sport, qp)
			}
			if seq := binary.BigEndian.Uint32(b[42:]); seq != next[fl] {
				return fmt.Errorf("flow %d: seq %d, want %d", fl, seq, next[fl])
			}
			next[fl]++
			got++
		}
		f.TxDone(qp)
	}
	return nil
}
