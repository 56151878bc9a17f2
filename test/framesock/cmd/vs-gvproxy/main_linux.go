//go:build linux

// Command vs-gvproxy measures guest-to-guest forwarding through frame
// sockets: two Go peers play two guests (QEMU -netdev stream, vfkit /
// QEMU -netdev dgram) on vhost-arcnet, and on gvisor-tap-vsock's gvproxy
// doing the same job, interleaved in one run (bench/vs-gvproxy.sh installs
// gvproxy and runs this).
//
// Peer A sends frames to peer B's MAC as fast as its socket takes them; B
// counts what arrives over the measured window. Frames are EtherType
// 0x88b5 (IEEE 802 local experimental): both backends switch them by MAC
// alone, so the work compared is the frame socket and the L2 switch (no
// DHCP, IP anti-spoofing or NAT). Printed per case: Mpps and Gbit/s (frame
// bytes) at B, the backend's CPU use, and frames per system call of the
// backend (perf stat -e raw_syscalls:sys_enter over the window; every
// system call counts, futex and epoll included).
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arcnet/vhost-arcnet/test/backend"
)

var (
	macA = []byte{0x02, 0, 0, 0, 0, 0x0a}
	macB = []byte{0x02, 0, 0, 0, 0, 0x0b}
)

func main() {
	gvproxy := flag.String("gvproxy", "", "gvproxy binary (bench/vs-gvproxy.sh installs v0.8.9)")
	seconds := flag.Float64("seconds", 5, "measured window per run")
	runs := flag.Int("runs", 3, "runs per case (vhost-arcnet and gvproxy interleaved)")
	sizes := flag.String("sizes", "64,1514", "frame sizes in bytes (Ethernet header included, no FCS)")
	pairs := flag.String("pairs", "stream,dgram,mixed", "peer pairs: stream (both -netdev stream), dgram (both unixgram), mixed (A unixgram, B stream)")
	flag.Parse()
	if *gvproxy == "" {
		fail(errors.New("-gvproxy PATH is required"))
	}
	bin, err := backend.Binary()
	if err != nil {
		fail(err)
	}
	defer backend.Cleanup()
	win := time.Duration(*seconds * float64(time.Second))
	fmt.Printf("# vs-gvproxy: %s vs %s; window %v, %d runs, median (min..max)\n", bin, *gvproxy, win, *runs)
	fmt.Printf("%-7s %5s %-12s %9s %21s %21s %8s %9s\n", "pair", "size", "backend", "Mpps", "(min..max)", "Gbit/s (min..max)", "cpu%", "frames/sc")
	for _, pair := range strings.Split(*pairs, ",") {
		for _, s := range strings.Split(*sizes, ",") {
			size, err := strconv.Atoi(s)
			if err != nil || size < 60 || size > 1514 {
				fail(fmt.Errorf("size %q: want 60..1514", s))
			}
			res := map[string][]result{}
			for r := 0; r < *runs; r++ {
				for _, be := range []string{"vhost-arcnet", "gvproxy"} {
					if be == "gvproxy" && pair == "dgram" {
						continue // one vfkit peer per gvproxy process
					}
					x, err := measure(be, bin, *gvproxy, pair, size, win)
					if err != nil {
						fail(fmt.Errorf("%s %s %d B: %w", be, pair, size, err))
					}
					res[be] = append(res[be], x)
				}
			}
			var med [2]float64
			for i, be := range []string{"vhost-arcnet", "gvproxy"} {
				rs := res[be]
				if len(rs) == 0 {
					fmt.Printf("%-7s %5d %-12s %9s   (gvproxy v0.8.9 serves one vfkit peer per process)\n", pair, size, be, "n/a")
					continue
				}
				pps := func(r result) float64 { return r.pps }
				m, lo, hi := stats(rs, pps)
				med[i] = m
				g, glo, ghi := stats(rs, func(r result) float64 { return r.pps * float64(size) * 8 / 1e9 })
				c, _, _ := stats(rs, func(r result) float64 { return r.cpu })
				f, _, _ := stats(rs, func(r result) float64 { return r.perSyscall })
				fmt.Printf("%-7s %5d %-12s %9.3f %21s %21s %8.0f %9.1f\n", pair, size, be, m/1e6,
					fmt.Sprintf("(%.3f..%.3f)", lo/1e6, hi/1e6), fmt.Sprintf("%.2f (%.2f..%.2f)", g, glo, ghi), c, f)
			}
			if med[1] > 0 {
				fmt.Printf("%-7s %5d ratio vhost-arcnet/gvproxy %.1fx\n", pair, size, med[0]/med[1])
			}
		}
	}
}

type result struct {
	pps        float64 // frames per second received by B
	cpu        float64 // backend CPU, percent of one core
	perSyscall float64 // frames B received per backend system call
}

func stats(rs []result, f func(result) float64) (med, lo, hi float64) {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2], v[0], v[len(v)-1]
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "vs-gvproxy:", err)
	backend.Cleanup()
	os.Exit(1)
}

// peer is one side of the pair.
type peer interface {
	send(frame []byte, n int) error // n copies of frame, batched as the transport allows
	recvLoop(count *atomic.Uint64)  // counts frames until the connection ends
	close()
}

// measure starts backend be, connects the pair, and measures B's receive
// rate over win after a warm-up.
func measure(be, bin, gvproxy, pair string, size int, win time.Duration) (result, error) {
	dir, err := os.MkdirTemp("", "vsgv")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	st, dg, ctl := filepath.Join(dir, "s.sock"), filepath.Join(dir, "d.sock"), filepath.Join(dir, "c.sock")
	var cmd *exec.Cmd
	var stderr bytes.Buffer
	if be == "vhost-arcnet" {
		cmd = exec.Command(bin, "--uplink", "none", "--lease-file", "none", "--dns-upstream", "127.0.0.1:9",
			"--log-level", "warn", "--listen-stream", st, "--listen-dgram", dg)
	} else {
		args := []string{"-ssh-port", "-1", "-listen-qemu", "unix://" + st}
		if pair == "stream" {
			args = append(args, "-listen", "unix://"+ctl)
		} else {
			args = append(args, "-listen-vfkit", "unixgram://"+dg)
		}
		cmd = exec.Command(gvproxy, args...)
	}
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	wait := func(p string) error {
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(p); err == nil {
				return nil
			}
		}
		return fmt.Errorf("%s did not appear: %s", p, stderr.String())
	}
	var a, b peer
	switch pair {
	case "stream":
		if err := wait(st); err != nil {
			return result{}, err
		}
		if a, err = dialStream(st); err != nil {
			return result{}, err
		}
		if be == "gvproxy" {
			if err := wait(ctl); err != nil {
				return result{}, err
			}
			b, err = dialConnect(ctl)
		} else {
			b, err = dialStream(st)
		}
	case "dgram":
		if err := wait(dg); err != nil {
			return result{}, err
		}
		if a, err = dialDgram(dg, filepath.Join(dir, "a.sock")); err == nil {
			b, err = dialDgram(dg, filepath.Join(dir, "b.sock"))
		}
	case "mixed":
		if err := wait(dg); err != nil {
			return result{}, err
		}
		if err := wait(st); err != nil {
			return result{}, err
		}
		if a, err = dialDgram(dg, filepath.Join(dir, "a.sock")); err == nil {
			b, err = dialStream(st)
		}
	default:
		return result{}, fmt.Errorf("unknown pair %q", pair)
	}
	if err != nil {
		return result{}, err
	}
	defer a.close()
	defer b.close()
	var got, junk atomic.Uint64
	go b.recvLoop(&got)
	go a.recvLoop(&junk)
	// Both switches learn each MAC from its first frame.
	for end := time.Now().Add(10 * time.Second); got.Load() == 0 && time.Now().Before(end); {
		if err := b.send(frame(macA, macB, 60), 1); err != nil {
			return result{}, err
		}
		time.Sleep(20 * time.Millisecond)
		if err := a.send(frame(macB, macA, 60), 1); err != nil {
			return result{}, err
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got.Load() == 0 {
		return result{}, fmt.Errorf("no frame went from A to B: %s", stderr.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := frame(macB, macA, size)
	go func() {
		for ctx.Err() == nil {
			if a.send(f, 64) != nil {
				return
			}
		}
	}()
	time.Sleep(time.Second) // warm-up
	pid := cmd.Process.Pid
	perf := exec.Command("perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", strconv.Itoa(pid), "--", "sleep", fmt.Sprint(win.Seconds()))
	var perfOut bytes.Buffer
	perf.Stderr = &perfOut
	cpu0 := cpuTicks(pid)
	n0, t0 := got.Load(), time.Now()
	perfErr := perf.Run()
	n1, t1 := got.Load(), time.Now()
	cpu1 := cpuTicks(pid)
	cancel()
	r := result{pps: float64(n1-n0) / t1.Sub(t0).Seconds()}
	r.cpu = float64(cpu1-cpu0) / 100 / t1.Sub(t0).Seconds() * 100 // USER_HZ = 100
	if sc := syscallCount(perfOut.String()); perfErr == nil && sc > 0 {
		r.perSyscall = float64(n1-n0) / float64(sc)
	}
	return r, nil
}

// frame is an Ethernet frame of size bytes from src to dst, EtherType
// 0x88b5.
func frame(dst, src []byte, size int) []byte {
	f := make([]byte, size)
	copy(f, dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], 0x88b5)
	for i := 14; i < size; i++ {
		f[i] = byte(i)
	}
	return f
}

func cpuTicks(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseUint(f[11], 10, 64)
	k, _ := strconv.ParseUint(f[12], 10, 64)
	return u + k
}

func syscallCount(perf string) uint64 {
	for _, l := range strings.Split(perf, "\n") {
		if strings.Contains(l, "raw_syscalls:sys_enter") {
			n, err := strconv.ParseUint(strings.Split(l, ",")[0], 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return 0
}

// streamPeer is a -netdev stream guest: [u32 BE length][frame].
type streamPeer struct {
	c   net.Conn
	buf []byte
}

func dialStream(path string) (*streamPeer, error) {
	c, err := dialRetry(path)
	if err != nil {
		return nil, err
	}
	return &streamPeer{c: c}, nil
}

// dialRetry connects to a unix stream socket, retrying while it is bound
// but not listening yet.
func dialRetry(path string) (net.Conn, error) {
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, err := net.Dial("unix", path)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(end) {
			return c, err
		}
	}
}

// dialConnect attaches a stream peer through gvproxy's control endpoint
// (POST /connect, then the connection carries frames in the qemu framing).
func dialConnect(path string) (*streamPeer, error) {
	c, err := dialRetry(path)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, "POST /connect HTTP/1.1\r\nHost: gvproxy\r\n\r\n"); err != nil {
		return nil, err
	}
	time.Sleep(200 * time.Millisecond) // the server hijacks the connection: no answer comes
	return &streamPeer{c: c}, nil
}

func (p *streamPeer) send(f []byte, n int) error {
	p.buf = p.buf[:0]
	for i := 0; i < n; i++ {
		p.buf = binary.BigEndian.AppendUint32(p.buf, uint32(len(f)))
		p.buf = append(p.buf, f...)
	}
	_, err := p.c.Write(p.buf)
	return err
}

func (p *streamPeer) recvLoop(count *atomic.Uint64) {
	buf := make([]byte, 1<<20)
	r, w := 0, 0
	for {
		k, err := p.c.Read(buf[w:])
		if err != nil {
			return
		}
		w += k
		n := uint64(0)
		for w-r >= 4 {
			l := int(binary.BigEndian.Uint32(buf[r:]))
			if w-r < 4+l {
				break
			}
			r += 4 + l
			n++
		}
		count.Add(n)
		w = copy(buf, buf[r:w])
		r = 0
	}
}

func (p *streamPeer) close() { _ = p.c.Close() }

// dgramPeer is a unixgram guest (vfkit, -netdev dgram): one frame per
// datagram, after the VFKT hello; sendmmsg/recvmmsg batches of 64.
type dgramPeer struct {
	c      *net.UnixConn
	local  string
	tx, rx *mmsgConn
}

func dialDgram(path, local string) (*dgramPeer, error) {
	c, err := net.DialUnix("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"}, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteBuffer(8 << 20)
	_ = c.SetReadBuffer(8 << 20)
	if _, err := c.Write([]byte("VFKT")); err != nil {
		return nil, err
	}
	time.Sleep(100 * time.Millisecond)
	p := &dgramPeer{c: c, local: local}
	if p.tx, err = newMmsg(c, 1); err != nil {
		return nil, err
	}
	if p.rx, err = newMmsg(c, 70000); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *dgramPeer) send(f []byte, n int) error {
	err := p.tx.sendBatch(f, n)
	if errors.Is(err, syscall.ENOBUFS) {
		return nil // macOS-style full queue: try again with the next batch
	}
	return err
}

func (p *dgramPeer) recvLoop(count *atomic.Uint64) {
	for {
		n, err := p.rx.recvBatch()
		if err != nil {
			return
		}
		count.Add(uint64(n))
	}
}

func (p *dgramPeer) close() { _ = p.c.Close(); _ = os.Remove(p.local) }
