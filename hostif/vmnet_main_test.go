package hostif

import (
	"os"
	"testing"

	"github.com/arcnet/vhost-arcnet/hostif/vmnettest"
)

// TestMain runs this test binary as the fake vmnet-helper when the vmnet
// tests start it as their helper (vmnettest.Env=1), else the tests.
func TestMain(m *testing.M) {
	if os.Getenv(vmnettest.Env) == "1" {
		os.Exit(vmnettest.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}
