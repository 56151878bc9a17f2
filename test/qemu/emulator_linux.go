//go:build linux

package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Emulator is a QEMU system emulator: its binary and the firmware
// directories it is given with -L (none for the system's own QEMU, which
// finds its firmware where Debian installed it).
type Emulator struct {
	Binary   string
	Firmware []string
}

// SystemQEMU is Debian's qemu-system-x86 (7.2 on bookworm): the emulator
// every test runs unless it says otherwise or ARCNET_QEMU names another.
var SystemQEMU = Emulator{Binary: qemuBinary}

// defaultEmulator is the emulator of a guest whose GuestConfig names none:
// ARCNET_QEMU (the path of a qemu-system-x86_64, e.g. the 10.0 that
// test/deps.sh unpacks, for a run of every test on it) or SystemQEMU.
func defaultEmulator() Emulator {
	if p := os.Getenv("ARCNET_QEMU"); p != "" {
		return unpackedEmulator(p)
	}
	return SystemQEMU
}

// unpackedEmulator is a QEMU unpacked from Debian packages into ROOT (the
// binary at ROOT/usr/bin): its own data files in ROOT/usr/share/qemu, the
// BIOS from the system's seabios package.
func unpackedEmulator(binary string) Emulator {
	root := filepath.Dir(filepath.Dir(filepath.Dir(binary)))
	return Emulator{Binary: binary, Firmware: []string{filepath.Join(root, "usr/share/qemu"), "/usr/share/seabios"}}
}

// args returns the -L arguments.
func (e Emulator) args() []string {
	var a []string
	for _, d := range e.Firmware {
		a = append(a, "-L", d)
	}
	return a
}

// QEMU10Path is where test/deps.sh unpacks QEMU 10.0 from
// bookworm-backports ($ARCNET_CACHE/qemu-10.0, else
// /var/cache/vhost-arcnet/qemu-10.0); ARCNET_QEMU10 overrides it.
func QEMU10Path() string {
	if p := os.Getenv("ARCNET_QEMU10"); p != "" {
		return p
	}
	dir := "/var/cache/vhost-arcnet"
	if d := os.Getenv("ARCNET_CACHE"); d != "" {
		dir = d
	}
	return filepath.Join(dir, "qemu-10.0", "usr/bin/qemu-system-x86_64")
}

// QEMU10 returns the QEMU 10.0 emulator, or skips the test when it is not
// there (make setup fetches it).
func QEMU10(t *testing.T) Emulator {
	t.Helper()
	p := QEMU10Path()
	out, err := exec.Command(p, "--version").Output()
	if err != nil || !strings.Contains(string(out), "version 10.") {
		t.Skipf("QEMU 10 not found at %s (make setup unpacks it; ARCNET_QEMU10 names another): %v %s", p, err, out)
	}
	return unpackedEmulator(p)
}
