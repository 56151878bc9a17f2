//go:build linux

package qemu

import (
	"os"
	"testing"

	"github.com/arcnet/vhost-arcnet/test/backend"
)

// TestMain catches SIGINT and SIGTERM (Ctrl-C during `make demo`): the
// running test stops and its clean-ups run, so the namespaces, processes
// and directories it made go (see backend.Main).
func TestMain(m *testing.M) {
	os.Exit(backend.Main(m))
}
