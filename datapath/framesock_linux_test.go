package datapath

import (
	"net"
	"path/filepath"
	"testing"
)

// TestDgramAllocs guards the batched datagram path (recvmmsg, dispatch to
// the peer's port, sendmmsg) at 0 allocations per batch.
func TestDgramAllocs(t *testing.T) {
	e := newFSEnv(t)
	e.cap.CountOnly = true // the capture's copies are not the path measured
	path := filepath.Join(e.dir, "d")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewDgramListener(c, e.opts(path))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer := dialDgram(t, e.dir, "p", path)
	frame := udp4Frame(macB, macA, ipA, ipB, 1, 2, 18)
	run := new(dgramRun)
	for i := range run.frames {
		run.frames[i].Segs = run.segs[i][:]
	}
	recv := func() {
		for k := 0; k < 8; k++ {
			if _, err := peer.Write(frame); err != nil {
				t.Fatal(err)
			}
		}
		for got := 0; got < 8; {
			n, err := l.rx.recv()
			if err != nil {
				t.Fatal(err)
			}
			l.dispatch(run, n)
			got += n
		}
	}
	recv() // makes the peer's port
	p := e.attached()
	if n := testing.AllocsPerRun(50, recv); n != 0 {
		t.Fatalf("datagram input: %v allocs per batch of 8", n)
	}
	if p.Stats().RxPackets.Load() < 8*51 {
		t.Fatalf("rx_packets %d", p.Stats().RxPackets.Load())
	}
	dp := l.peers[filepath.Join(e.dir, "p")]
	buf := append(append([]byte{}, frame...), frame...)
	ends := []int{len(frame), 2 * len(frame)}
	rd := make([]byte, 100)
	if n := testing.AllocsPerRun(50, func() {
		if k, err := dp.tx.send(buf, ends, 0, 0); k != 2 || err != nil {
			t.Fatal(k, err)
		}
		_, _ = peer.Read(rd)
		_, _ = peer.Read(rd)
	}); n != 0 {
		t.Fatalf("datagram output: %v allocs per batch", n)
	}
}
