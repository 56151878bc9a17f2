package virtio_test

import "github.com/arcnet/vhost-arcnet/virtio"

func init() {
	crossCoreExtra = append(crossCoreExtra, crossCoreCase{
		"mergeable/64B/plain", virtio.FVersion1 | virtio.NetFMrgRxbuf, 64,
		func(rx *virtio.NetRX, payload [][]byte) (bool, error) { return rx.WritePlain(payload) },
	})
}
