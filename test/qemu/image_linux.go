//go:build linux

package qemu

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/test/backend"
)

// Guest files embedded in the harness; their bytes are part of the
// initramfs cache key.
var (
	//go:embed guest/init.sh
	initScript []byte
	//go:embed guest/udhcpc.script
	udhcpcScript []byte
)

// kernelFlavor is the Debian kernel the guest boots: the cloud flavour is
// small (26.7 MB .deb), LZ4-compressed (fast to unpack) and has CONFIG_PVH.
const kernelFlavor = "cloud-amd64"

// guestModules are the modules the initramfs loads. No Debian kernel has
// virtio built in; the load order is computed from their depends= fields.
var guestModules = []string{
	"failover", "net_failover", "virtio_ring", "virtio",
	"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_net",
}

// busyboxPath is where Debian's busybox-static installs its binary.
const busyboxPath = "/bin/busybox"

// Image is a bootable guest: an uncompressed ELF kernel (booted through its
// PVH entry) and a gzip'd initramfs, both in the cache.
type Image struct {
	Release   string // kernel release, e.g. "6.1.0-56-cloud-amd64"
	Kernel    string // path of the ELF vmlinux
	Initramfs string // path of the initramfs
}

// errNotDebian says the host cannot build the guest image (no apt/dpkg):
// tests skip on it.
var errNotDebian = errors.New("guest image needs a Debian host (apt-get, apt-cache, dpkg-deb)")

var shared struct {
	sync.Mutex
	img *Image
	err error
}

// BuildImage returns the guest image, building it (or taking it from the
// cache) on the first call of the process; later calls return the same
// result. logf reports progress.
func BuildImage(ctx context.Context, logf func(format string, args ...any)) (*Image, error) {
	shared.Lock()
	defer shared.Unlock()
	if shared.img == nil && shared.err == nil {
		shared.img, shared.err = buildImage(ctx, logf)
	}
	return shared.img, shared.err
}

// CacheDir returns the guest cache: $ARCNET_CACHE/guest, else
// /var/cache/vhost-arcnet/guest for root, else the user's cache directory.
func CacheDir() (string, error) {
	if d := os.Getenv("ARCNET_CACHE"); d != "" {
		return filepath.Join(d, "guest"), nil
	}
	if os.Geteuid() == 0 {
		return "/var/cache/vhost-arcnet/guest", nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory (set ARCNET_CACHE): %w", err)
	}
	return filepath.Join(d, "vhost-arcnet", "guest"), nil
}

func buildImage(ctx context.Context, logf func(string, ...any)) (*Image, error) {
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%w: %s not found", errNotDebian, tool)
		}
	}
	dir, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("guest cache: %w", err)
	}
	// Several test binaries (go test -p N, or two work trees) may build at
	// once: one at a time, the others then find the result in the cache.
	unlock, err := lockFile(filepath.Join(dir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	release, err := kernelRelease(ctx, dir, logf)
	if err != nil {
		return nil, err
	}
	kdir := filepath.Join(dir, "kernel-"+release)
	if _, err := os.Stat(filepath.Join(kdir, "complete")); err != nil {
		t0 := time.Now()
		if err := fetchKernel(ctx, dir, kdir, release, logf); err != nil {
			return nil, fmt.Errorf("kernel %s: %w", release, err)
		}
		logf("guest kernel %s fetched and unpacked in %v", release, time.Since(t0).Round(time.Millisecond))
	}
	initrd, err := ensureInitramfs(ctx, dir, kdir, release, logf)
	if err != nil {
		return nil, err
	}
	return &Image{Release: release, Kernel: filepath.Join(kdir, "vmlinux"), Initramfs: initrd}, nil
}

func lockFile(p string) (unlock func(), err error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("guest cache lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("guest cache lock: %w", err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}

// kernelRelease returns the release of the current Debian cloud kernel, as
// the linux-image-cloud-amd64 metapackage depends on it; ARCNET_GUEST_KERNEL
// overrides. Without package lists it runs apt-get update once, and without
// a network it falls back to the newest kernel in the cache.
func kernelRelease(ctx context.Context, cache string, logf func(string, ...any)) (string, error) {
	if r := os.Getenv("ARCNET_GUEST_KERNEL"); r != "" {
		return r, nil
	}
	meta := "linux-image-" + kernelFlavor
	query := func() string {
		out, _ := exec.CommandContext(ctx, "apt-cache", "depends", meta).Output()
		for _, l := range strings.Split(string(out), "\n") {
			if dep, ok := strings.CutPrefix(strings.TrimSpace(l), "Depends: linux-image-"); ok {
				return dep
			}
		}
		return ""
	}
	if r := query(); r != "" {
		return r, nil
	}
	logf("apt-cache knows no %s: running apt-get update", meta)
	if out, err := runCmd(ctx, "", nil, "apt-get", "update"); err != nil {
		logf("apt-get update: %v\n%s", err, lastLines(out, 5))
	}
	if r := query(); r != "" {
		return r, nil
	}
	cached, _ := filepath.Glob(filepath.Join(cache, "kernel-*", "complete"))
	if len(cached) > 0 {
		sort.Strings(cached)
		r := strings.TrimPrefix(filepath.Base(filepath.Dir(cached[len(cached)-1])), "kernel-")
		logf("no package lists: using the cached kernel %s", r)
		return r, nil
	}
	return "", fmt.Errorf("cannot find the Debian kernel: apt-cache depends %s names none (apt-get update failed?)", meta)
}

// fetchKernel downloads linux-image-RELEASE, takes the bzImage and the
// guest modules out of it, decompresses the bzImage to vmlinux and leaves
// vmlinux, the modules and a "complete" marker in kdir.
func fetchKernel(ctx context.Context, cache, kdir, release string, logf func(string, ...any)) error {
	tmp, err := os.MkdirTemp(cache, "tmp-kernel-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	pkg := "linux-image-" + release
	if out, err := runCmd(ctx, tmp, nil, "apt-get", "download", pkg); err != nil {
		logf("apt-get download %s failed (%v): running apt-get update and trying again", pkg, err)
		if out, err := runCmd(ctx, "", nil, "apt-get", "update"); err != nil {
			logf("apt-get update: %v\n%s", err, lastLines(out, 5))
		}
		if out2, err := runCmd(ctx, tmp, nil, "apt-get", "download", pkg); err != nil {
			return fmt.Errorf("apt-get download %s: %w\n%s\n%s", pkg, err, lastLines(out, 5), lastLines(out2, 5))
		}
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	version, _ := runCmd(ctx, "", nil, "dpkg-deb", "-f", debs[0], "Version")

	bz, mods, err := unpackKernelDeb(ctx, debs[0], release)
	if err != nil {
		return err
	}
	out := filepath.Join(tmp, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return err
	}
	for name, b := range mods {
		if err := os.WriteFile(filepath.Join(out, name+".ko"), b, 0o644); err != nil {
			return err
		}
	}
	if err := extractVmlinux(ctx, bz, filepath.Join(out, "vmlinux")); err != nil {
		return err
	}
	info := fmt.Sprintf("package=%s version=%s\n", pkg, strings.TrimSpace(string(version)))
	if err := os.WriteFile(filepath.Join(out, "complete"), []byte(info), 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(kdir); err != nil {
		return err
	}
	return os.Rename(out, kdir)
}

// unpackKernelDeb reads the data archive of the kernel .deb
// (dpkg-deb --fsys-tarfile: the same files dpkg-deb -x would write, as a tar
// stream) and keeps only boot/vmlinuz-RELEASE and the guest modules, so the
// 100 MB module tree never touches the disk.
func unpackKernelDeb(ctx context.Context, deb, release string) (bzImage []byte, mods map[string][]byte, err error) {
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("dpkg-deb: %w", err)
	}
	want := make(map[string]bool, len(guestModules))
	for _, m := range guestModules {
		want[m] = true
	}
	mods = make(map[string][]byte)
	modPrefix := "lib/modules/" + release + "/kernel/"
	tr := tar.NewReader(stdout)
	var readErr error
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = fmt.Errorf("read %s: %w", deb, err)
			break
		}
		name := strings.TrimPrefix(path.Clean(h.Name), "./")
		switch {
		case name == "boot/vmlinuz-"+release:
			bzImage, readErr = io.ReadAll(tr)
		case strings.HasPrefix(name, modPrefix) && strings.HasSuffix(name, ".ko"):
			if m := strings.TrimSuffix(path.Base(name), ".ko"); want[m] {
				mods[m], readErr = io.ReadAll(tr)
			}
		case strings.HasPrefix(name, modPrefix) && strings.HasSuffix(name, ".ko.xz"):
			if m := strings.TrimSuffix(path.Base(name), ".ko.xz"); want[m] {
				xz := exec.CommandContext(ctx, "xz", "-dc")
				xz.Stdin = tr
				if mods[m], readErr = xz.Output(); readErr != nil {
					readErr = fmt.Errorf("xz -dc %s: %w", name, readErr)
				}
			}
		}
		if readErr != nil {
			break
		}
	}
	io.Copy(io.Discard, stdout) //nolint:errcheck // let dpkg-deb finish writing
	if err := cmd.Wait(); err != nil && readErr == nil {
		readErr = fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", deb, err, lastLines(stderr.Bytes(), 3))
	}
	if readErr != nil {
		return nil, nil, readErr
	}
	if bzImage == nil {
		return nil, nil, fmt.Errorf("%s has no boot/vmlinuz-%s", deb, release)
	}
	for _, m := range guestModules {
		if mods[m] == nil {
			return nil, nil, fmt.Errorf("%s has no module %s.ko", deb, m)
		}
	}
	return bzImage, mods, nil
}

// extractVmlinux writes the uncompressed ELF kernel of a bzImage to dst,
// decompressing its payload with the lz4 or xz command.
func extractVmlinux(ctx context.Context, bz []byte, dst string) error {
	payload, kind, err := kernelPayload(bz)
	if err != nil {
		return err
	}
	args := []string{"lz4", "-dc"}
	if kind == compressionXZ {
		args = []string{"xz", "-dc", "--single-stream"}
	}
	if _, err := exec.LookPath(args[0]); err != nil {
		return fmt.Errorf("the kernel is %s-compressed and %s is not installed (apt-get install %s): %w",
			kind, args[0], map[compression]string{compressionLZ4: "lz4", compressionXZ: "xz-utils"}[kind], err)
	}
	tmp := dst + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = bytes.NewReader(payload)
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	runErr := cmd.Run()
	if err := f.Close(); err != nil {
		return err
	}
	// A payload found by scanning runs to the end of the bzImage, so the
	// decoder may fail on the bytes after the stream: the result counts when
	// it is a complete kernel.
	st, err := os.Stat(tmp)
	if err != nil {
		return err
	}
	r, err := os.Open(tmp)
	if err != nil {
		return err
	}
	checkErr := checkVmlinux(r, st.Size())
	r.Close()
	if checkErr != nil {
		return fmt.Errorf("%s -dc: %v: %s: %w", args[0], runErr, lastLines(stderr.Bytes(), 3), checkErr)
	}
	return os.Rename(tmp, dst)
}

// ensureInitramfs returns the cached initramfs for this kernel and these
// guest files, building it when absent. Its name carries a hash of
// everything that goes in, so a changed init script builds a new one.
func ensureInitramfs(ctx context.Context, cache, kdir, release string, logf func(string, ...any)) (string, error) {
	busybox, err := os.ReadFile(busyboxPath)
	if err != nil {
		return "", fmt.Errorf("busybox: %w (apt-get install busybox-static)", err)
	}
	if err := checkStatic(busybox); err != nil {
		return "", fmt.Errorf("%s: %w (apt-get install busybox-static)", busyboxPath, err)
	}
	raw, err := buildGuestTool(ctx, cache, "rawframe", "arcnet-rawframe")
	if err != nil {
		return "", err
	}
	udp, err := buildGuestTool(ctx, cache, "udpprobe", "arcnet-udp")
	if err != nil {
		return "", err
	}
	deps := make(map[string][]string, len(guestModules))
	kos := make(map[string][]byte, len(guestModules))
	for _, m := range guestModules {
		b, err := os.ReadFile(filepath.Join(kdir, m+".ko"))
		if err != nil {
			return "", err
		}
		if deps[m], err = moduleDepends(b); err != nil {
			return "", fmt.Errorf("module %s: %w", m, err)
		}
		kos[m] = b
	}
	order, err := moduleOrder(guestModules, deps)
	if err != nil {
		return "", err
	}

	entries := []cpioEntry{cpioDir("bin")}
	for _, d := range []string{"sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "etc", "lib", "lib/modules", "root"} {
		entries = append(entries, cpioDir(d))
	}
	entries = append(entries,
		cpioFile("bin/busybox", 0o755, busybox),
		cpioSymlink("bin/sh", "busybox"),
		cpioFile("bin/arcnet-rawframe", 0o755, raw),
		cpioFile("bin/arcnet-udp", 0o755, udp),
		cpioCharDev("dev/console", 0o600, 5, 1),
		cpioCharDev("dev/null", 0o666, 1, 3),
		cpioFile("init", 0o755, initScript),
		cpioFile("etc/udhcpc.script", 0o755, udhcpcScript),
		cpioFile("lib/modules/order", 0o644, []byte(strings.Join(order, "\n")+"\n")),
	)
	for _, m := range order {
		entries = append(entries, cpioFile("lib/modules/"+m+".ko", 0o644, kos[m]))
	}

	h := sha256.New()
	for _, e := range entries {
		fmt.Fprintf(h, "%s %o %d %d %d\n", e.Name, e.Mode, e.DevMaj, e.DevMin, len(e.Data))
		h.Write(e.Data)
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	dst := filepath.Join(cache, "initramfs-"+release+"-"+key+".cpio.gz")
	now := time.Now()
	if _, err := os.Stat(dst); err == nil {
		_ = os.Chtimes(dst, now, now) // mark as used, for pruning
		return dst, nil
	}
	tmp := dst + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	err = errors.Join(writeInitramfs(f, entries), f.Close())
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("initramfs: %w", err)
	}
	logf("guest initramfs %s built (modules: %s)", filepath.Base(dst), strings.Join(order, " "))
	pruneInitramfs(cache, dst, now.Add(-24*time.Hour))
	return dst, nil
}

// pruneInitramfs removes initramfs files other than keep that were last
// used before cutoff (older init scripts, older kernels).
func pruneInitramfs(cache, keep string, cutoff time.Time) {
	old, _ := filepath.Glob(filepath.Join(cache, "initramfs-*.cpio.gz"))
	for _, p := range old {
		if st, err := os.Stat(p); err == nil && p != keep && st.ModTime().Before(cutoff) {
			os.Remove(p)
		}
	}
}

// checkStatic reports an error unless b is a statically linked ELF
// executable (no PT_INTERP): the initramfs has no libc.
func checkStatic(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked")
		}
	}
	return nil
}

// buildGuestTool compiles one of the guest's tools (./rawframe, the raw
// frame sender; ./udpprobe, the UDP echo client and server) for linux/amd64
// without cgo and returns the binary.
func buildGuestTool(ctx context.Context, cache, dir, name string) ([]byte, error) {
	root, err := backend.ModuleRoot()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(cache, "tmp-"+dir+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, name)
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	cmd := exec.CommandContext(ctx, backend.GoTool(), "build", "-buildvcs=false", "-trimpath", "-ldflags=-s -w", "-o", bin, "./test/qemu/"+dir)
	cmd.Dir = root
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: %w\n%s", dir, err, out)
	}
	return os.ReadFile(bin)
}

// runCmd runs a command (in dir, with stdin) and returns its combined output.
func runCmd(ctx context.Context, dir string, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out.Bytes(), nil
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
