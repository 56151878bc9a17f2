package hostif

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// vmnetHelperPaths are where vmnet-helper installs itself (vmnet-helper
// docs/integration.md "Install location"): the install script's fixed
// location (macOS 15 and earlier), then Homebrew's libexec on Apple
// Silicon and on Intel (macOS 26 and later).
var vmnetHelperPaths = []string{
	"/opt/vmnet-helper/bin/vmnet-helper",
	"/opt/homebrew/opt/vmnet-helper/libexec/vmnet-helper",
	"/usr/local/opt/vmnet-helper/libexec/vmnet-helper",
}

// DefaultVMNetHelper returns the first vmnet-helper found in the places it
// installs itself, then on PATH.
func DefaultVMNetHelper() (string, error) {
	for _, p := range vmnetHelperPaths {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath("vmnet-helper"); err == nil {
		return filepath.Clean(p), nil
	}
	return "", fmt.Errorf("vmnet-helper not found in %v or on PATH: install it (github.com/nirs/vmnet-helper) or give --vmnet-helper PATH: %w",
		vmnetHelperPaths, errors.ErrUnsupported)
}

// helperSysProcAttr puts the helper in its own process group, so that a
// Ctrl-C in vhost-arcnet's terminal reaches only vhost-arcnet, which then
// stops the helper itself (SIGTERM: vmnet-helper stops its interface).
func helperSysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
