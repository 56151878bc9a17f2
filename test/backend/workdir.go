package backend

import (
	"os"
	"testing"
)

// WorkDir makes a directory for a test's sockets and logs, named
// prefix+random under the system's temporary directory (short: a unix
// socket path has at most 107 bytes), and removes it when the test ends
// unless the environment variable keep is "1": then the test logs where
// it is. Called first, its clean-up runs last, after every process the
// test started is gone.
func WorkDir(t testing.TB, prefix, keep string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	forget := LastResort(func() {
		if os.Getenv(keep) != "1" {
			os.RemoveAll(dir)
		}
	})
	t.Cleanup(func() {
		forget()
		if os.Getenv(keep) == "1" {
			t.Logf("kept %s (%s=1)", dir, keep)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}
