package hostif

import (
	"strings"
	"testing"
)

// wantErr checks a table case's error: with want "" err must be nil,
// otherwise err must contain want. It reports whether the case expected
// an error (then there is nothing more to check).
func wantErr(t *testing.T, err error, want string) bool {
	t.Helper()
	if want != "" {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v, want one containing %q", err, want)
		}
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}
