package vhostusertest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// PumpOptions configure Pump.
type PumpOptions struct {
	// Pairs is the number of queue pairs used on both frontends.
	Pairs int
	// Frames is how many frames to send in all (split evenly over the
	// pairs).
	Frames int64
	// Flows are the frames to send: queue pair qp sends Flows[qp],
	// Flows[qp+Pairs], ... round robin.
	Flows [][]byte
	// Window bounds the frames in flight over all pairs (sent, not yet
	// received); it must fit the smallest receive queue. Default 512.
	Window int64
	// Batch is how many frames a transmit goroutine adds per Flush;
	// default 32.
	Batch int64
}

// Pump sends opt.Frames frames from tx to rx and waits until rx has
// received them all, with one goroutine per queue pair and direction (see
// pairs.go): each transmitq of tx has a sender, each receiveq of rx a
// receiver that drains it and sleeps on its call fd. tx and rx may be the
// same Frontend (a backend that loops frames back). Frames may arrive on
// any of rx's receive queues; a sender waits while Window frames are in
// flight. It fails if no frame arrives for 10 s.
func Pump(tx, rx *Frontend, opt PumpOptions) error {
	if opt.Window == 0 {
		opt.Window = 512
	}
	if opt.Batch == 0 {
		opt.Batch = 32
	}
	pairs := opt.Pairs
	if pairs < 1 || len(opt.Flows) < pairs {
		return fmt.Errorf("vhostusertest: pump of %d flows over %d pairs", len(opt.Flows), pairs)
	}
	var sent, received atomic.Int64
	progress := make([]chan struct{}, pairs) // one per sender
	for qp := range progress {
		progress[qp] = make(chan struct{}, 1)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*pairs)
	for qp := 0; qp < pairs; qp++ {
		per := opt.Frames / int64(pairs)
		if int64(qp) < opt.Frames%int64(pairs) {
			per++
		}
		wg.Add(2)
		go func() { // receiveq qp
			defer wg.Done()
			idle := time.Now()
			for received.Load() < opt.Frames {
				if n, _ := rx.DrainPair(qp); n > 0 {
					received.Add(int64(n))
					for _, c := range progress {
						select {
						case c <- struct{}{}:
						default:
						}
					}
					idle = time.Now()
					continue
				}
				if time.Since(idle) > 10*time.Second {
					errs <- fmt.Errorf("receiveq %d: nothing for 10 s; %d of %d frames received", qp, received.Load(), opt.Frames)
					return
				}
				// Short: the last frames may all go to another pair.
				_, _ = rx.WaitCallFor(2*qp, 5*time.Millisecond)
			}
		}()
		go func() { // transmitq qp
			defer wg.Done()
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			fl := qp
			for done := int64(0); done < per; {
				for sent.Load()-received.Load() >= opt.Window {
					timer.Reset(10 * time.Second)
					select {
					case <-progress[qp]:
					case <-timer.C:
						errs <- fmt.Errorf("transmitq %d stalled: %d sent, %d received", qp, sent.Load(), received.Load())
						return
					}
				}
				n := min(opt.Batch, per-done, opt.Window-(sent.Load()-received.Load()))
				if n <= 0 {
					continue
				}
				for i := int64(0); i < n; i++ {
					if err := tx.AddFrame(qp, virtio.NetHdr{}, opt.Flows[fl], LayoutSingle); err != nil {
						errs <- err
						return
					}
					if fl += pairs; fl >= len(opt.Flows) {
						fl = qp
					}
				}
				sent.Add(n)
				if err := tx.Flush(qp); err != nil {
					errs <- err
					return
				}
				tx.TxDone(qp)
				done += n
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when closed and empty
}
