package testlog

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBuffer(t *testing.T) {
	var b Buffer
	log := b.Logger()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { log.Info("hello", "i", i) })
	}
	log.Warn("careful")
	log.Debug("not kept at the default level")
	wg.Wait()
	require.Len(t, b.Lines("msg=hello"), 4)
	require.Len(t, b.Lines("level=WARN", "level=ERROR"), 1)
	require.Empty(t, b.Lines("not kept"))
	require.Empty(t, b.Lines())
	require.Contains(t, b.String(), "careful")
}
