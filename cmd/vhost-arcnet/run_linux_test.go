//go:build linux

package main

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// startRun runs vhost-arcnet's run function with cfg in the test process,
// its log records kept in the returned logRecords. stop cancels the run
// and requires that it ended without an error; it may be called more than
// once (the later calls do nothing) and is called at the end of the test.
// A test's own cleanup that needs the run ended first calls stop itself.
func startRun(t *testing.T, cfg *config) (logs *logRecords, stop func()) {
	t.Helper()
	logs = &logRecords{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(logs)) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			require.NoError(t, <-done)
		}
	}
	t.Cleanup(stop)
	return logs, stop
}
