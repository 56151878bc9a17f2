package backend

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// bin is the vhost-arcnet binary, built once per process.
var bin struct {
	sync.Mutex
	dir  string // temporary directory of a built binary, removed by Cleanup
	path string
	err  error
}

// Binary returns the vhost-arcnet binary: $ARCNET_BIN if set, else
// `go build ./cmd/vhost-arcnet` from the module root, once per process.
func Binary() (string, error) {
	bin.Lock()
	defer bin.Unlock()
	if bin.path != "" || bin.err != nil {
		return bin.path, bin.err
	}
	if p := os.Getenv("ARCNET_BIN"); p != "" {
		bin.path = p
		return p, nil
	}
	dir, err := os.MkdirTemp("", "arcnet-bin-")
	if err != nil {
		bin.err = err
		return "", err
	}
	bin.dir = dir
	p := filepath.Join(dir, "vhost-arcnet")
	if bin.err = Build(p); bin.err == nil {
		bin.path = p
	}
	return bin.path, bin.err
}

// RequireBinary is Binary for a test: it fails the test if the binary does
// not build.
func RequireBinary(t testing.TB) string {
	t.Helper()
	p, err := Binary()
	if err != nil {
		t.Fatalf("vhost-arcnet binary: %v", err)
	}
	return p
}

// Cleanup removes what the package built for the whole process (the
// binary); TestMain calls it after the tests.
func Cleanup() {
	bin.Lock()
	defer bin.Unlock()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
		bin.dir = ""
	}
}

// Build builds this module's cmd/vhost-arcnet into out; the error carries
// go build's output.
func Build(out string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command(GoTool(), "build", "-buildvcs=false", "-o", out, "./cmd/vhost-arcnet")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/vhost-arcnet in %s: %w\n%s", root, err, b)
	}
	return nil
}

// ModuleRoot returns the directory of the module's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command(GoTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(mod), nil
}

// GoTool returns the go command: the one of $GOROOT when set (go test sets
// it for the test binary), else the one in $PATH.
func GoTool() string {
	if r := os.Getenv("GOROOT"); r != "" {
		p := filepath.Join(r, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}
