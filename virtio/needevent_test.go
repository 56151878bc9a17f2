package virtio_test

import (
	"testing"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/stretchr/testify/require"
)

func TestNeedEvent(t *testing.T) {
	for _, tc := range []struct {
		event, newIdx, old uint16
		want               bool
	}{
		{0, 1, 0, true},
		{0, 0, 0, false},
		{1, 1, 0, false},
		{4, 5, 3, true},
		{4, 6, 5, false},
		{2, 5, 3, false},
		{0xffff, 0, 0xfffe, true}, // across the wrap
		{0xffff, 2, 0xfff0, true},
		{3, 2, 0xfff0, false},
		{0x8000, 0x8001, 0, true},
	} {
		require.Equal(t, tc.want, virtio.NeedEvent(tc.event, tc.newIdx, tc.old), "%+v", tc)
	}
}
