package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/arcnet/vhost-arcnet/nat"
	"github.com/arcnet/vhost-arcnet/services"
)

// NAT flows survive a restart (kill, crash, upgrade): the engine's flows are
// written to --nat-state-file every natSaveInterval when they changed and at
// a clean exit, and a new process restores them before its uplink passes
// traffic, so that a connection in flight keeps its external port and the
// remote's next segment finds its flow.

// natSaveInterval is how often the flows are written when they changed. A
// connection opened less than this before a kill may not be in the file.
// The cost at 100k flows: 38 bytes a flow (3.8 MB), about 1.1 ms of
// snapshot (nat.BenchmarkSnapshot; the engine's lock is held for one
// chunk of 1024 flows at a time, 10 to 15 µs) and 12 to 18 ms
// for the whole write with fsync and rename on this project's test VM's
// ext4 (BenchmarkFlowSave): under 1% of a core at one write every 2 s.
const natSaveInterval = 2 * time.Second

// natStateMaxSize bounds what is read from a state file: far more than the
// largest table (--nat-max-flows) writes.
const natStateMaxSize = 1 << 30

// flowSaver writes the NAT engine's flows to a file.
type flowSaver struct {
	path string
	eng  *nat.Engine
	log  *slog.Logger
	buf  []byte
	last uint64 // the engine's Activity at the last write (or the restore)
	errs int    // failed writes in a row: only the first is logged
}

// restoreFlows loads the flows saved at path into eng (which translates
// nothing yet). A missing file is an empty table. A file that cannot be
// read or is damaged gives one warning and an empty table: a restart never
// fails for it, and the next write replaces it.
func restoreFlows(path string, eng *nat.Engine, log *slog.Logger) *flowSaver {
	s := &flowSaver{path: path, eng: eng, log: log}
	services.RemoveStaleStateTemps(path)
	b, err := readStateFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("nat flows: no state file", "file", path)
	case err != nil:
		log.Warn("nat flows not restored: starting with none", "file", path, "err", err)
	default:
		st, err := eng.Restore(b)
		if err != nil {
			log.Warn("nat flows not restored: starting with none", "file", path, "err", err)
			break
		}
		log.Info("nat flows restored", "file", path, "flows", st.Restored, "expired", st.Expired,
			"skipped", st.Skipped, "refused", st.Refused, "saved", st.SavedAt.UTC().Format(time.RFC3339Nano),
			"age", time.Since(st.SavedAt).Round(time.Millisecond).String())
	}
	s.last = eng.Activity()
	return s
}

func readStateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, natStateMaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > natStateMaxSize {
		return nil, fmt.Errorf("larger than %d bytes", natStateMaxSize)
	}
	return b, nil
}

// save writes the flows if they changed since the last write (always with
// force).
func (s *flowSaver) save(force bool) {
	a := s.eng.Activity()
	if a == s.last && !force {
		return
	}
	var n int
	s.buf, n = s.eng.AppendSnapshot(s.buf[:0])
	if err := services.WriteStateFile(s.path, s.buf); err != nil {
		if s.errs == 0 {
			s.log.Error("nat flows: writing the state file failed (retried; logged again once it works)", "file", s.path, "err", err)
		}
		s.errs++
		return
	}
	if s.errs != 0 {
		s.log.Info("nat flows: state file written again", "file", s.path, "failed_writes", s.errs)
		s.errs = 0
	}
	s.last = a
	s.log.Debug("nat flows saved", "file", s.path, "flows", n, "bytes", len(s.buf))
}

// run saves the flows every natSaveInterval until ctx ends.
func (s *flowSaver) run(ctx context.Context) {
	t := time.NewTicker(natSaveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.save(false)
		}
	}
}

// startFlowSaver restores the saved flows into the engine and keeps the
// file up to date until close (a last write there). Called before the
// uplink starts.
func (n *network) startFlowSaver(path string) {
	if n.eng == nil || path == "" {
		return
	}
	n.flows = restoreFlows(path, n.eng, n.log)
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.flows.run(n.ctx) }()
}
