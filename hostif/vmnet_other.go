//go:build !darwin

package hostif

import (
	"errors"
	"fmt"
)

// DefaultVMNetHelper fails: vmnet (and so vmnet-helper) is macOS only.
// On other systems the vmnet uplink runs only with an explicit helper
// that speaks vmnet-helper's protocol (the tests' fake).
func DefaultVMNetHelper() (string, error) {
	return "", fmt.Errorf("vmnet is macOS only; on this system --vmnet-helper must name a program that speaks vmnet-helper's protocol: %w",
		errors.ErrUnsupported)
}
