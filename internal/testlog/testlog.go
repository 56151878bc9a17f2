// Package testlog is the log capture of the tests: a Buffer collects what
// a logger (or a child process) writes, and the test reads it back as
// text or as the lines that name something.
//
// # Concurrency
//
// A Buffer is safe for concurrent use: the code under test may write to
// it from its own goroutines while the test reads it.
package testlog

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
)

// Buffer is an io.Writer that keeps everything written to it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Lines returns the lines written so far that contain any of subs.
func (b *Buffer) Lines(subs ...string) []string {
	var out []string
	for _, line := range strings.Split(b.String(), "\n") {
		for _, s := range subs {
			if strings.Contains(line, s) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

// Logger is a text logger (slog's default options: info and above) that
// writes to b.
func (b *Buffer) Logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }
