//go:build linux

package netns

import (
	"os"
	"testing"

	"github.com/arcnet/vhost-arcnet/test/backend"
)

// TestMain catches SIGINT and SIGTERM: the running test stops and its
// clean-ups delete the namespaces it made (see backend.Main).
func TestMain(m *testing.M) {
	os.Exit(backend.Main(m))
}
