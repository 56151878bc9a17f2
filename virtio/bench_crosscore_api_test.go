package virtio_test

import "github.com/arcnet/vhost-arcnet/virtio"

// crossFrames and crossBufs are the plain-batch case's scratch.
var (
	crossFrames [64][][]byte
	crossBufs   [64]virtio.PlainBuf
)

func init() {
	crossCoreExtra = append(crossCoreExtra, crossCoreCase{
		"mergeable/64B/plain", virtio.FVersion1 | virtio.NetFMrgRxbuf, 64,
		func(rx *virtio.NetRX, payload [][]byte) (bool, error) { return rx.WritePlain(payload) }, nil,
	}, crossCoreCase{
		// The batched one-buffer path, as GuestPort.deliver uses it.
		"mergeable/64B/plain-batch", virtio.FVersion1 | virtio.NetFMrgRxbuf, 64, nil,
		func(rx *virtio.NetRX, payload [][]byte, n int) int {
			frames := crossFrames[:n]
			for i := range frames {
				frames[i] = payload
			}
			r := writePlainBatch(rx, frames, crossBufs[:n])
			if r.err != nil {
				panic(r.err)
			}
			return r.written
		},
	})
}
