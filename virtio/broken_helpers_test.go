package virtio_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/virtio"
)

// requireBreaks pops (and pushes back) up to three chains of q and
// requires that it breaks with want (an ErrBroken), and that the failure
// is sticky: a later Pop returns the same error. It returns the error.
func requireBreaks(t *testing.T, q *virtio.Queue, want error) error {
	t.Helper()
	var c virtio.Chain
	var err error
	for range 3 {
		var ok bool
		if ok, err = q.Pop(&c); err != nil {
			break
		}
		if ok {
			require.NoError(t, q.Push(c.Head, 0))
		}
	}
	require.ErrorIs(t, err, virtio.ErrBroken)
	require.ErrorIs(t, err, want)
	t.Log(err)
	ok, err2 := q.Pop(&c)
	require.False(t, ok)
	require.Equal(t, err, err2)
	return err
}
