//go:build unix

package hostif

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// vmnetSocketBuffer is the size asked for both buffers of our end of
	// the socketpair (vmnet-helper sizes its own end): room for a few
	// hundred full-size frames. The kernel may give less (macOS caps it
	// at kern.ipc.maxsockbuf); that only costs drops under bursts.
	vmnetSocketBuffer = 4 << 20
	// helperStopGrace is how long a helper has to exit after SIGTERM
	// (vmnet-helper docs/integration.md "Stopping the interface") before
	// it is killed.
	helperStopGrace = 5 * time.Second
	// stderrTail is how many of the helper's last stderr lines an exit
	// error quotes.
	stderrTail = 3
)

// helperProc is one running helper process.
type helperProc struct {
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{} // closed when it exited
	err     error         // its exit status, set before done closes

	mu   sync.Mutex
	tail []string // its last stderr lines
}

// startHelper starts path with args and our socketpair's other end as its
// fd 3, reads its description line from stdout (until ctx ends), and
// returns the process and our end. The helper's stderr lines are logged
// at info level (vmnet-helper logs there); stdout after the description
// is logged too.
func startHelper(ctx context.Context, path string, args []string, log *slog.Logger) (*helperProc, *os.File, VMNetInfo, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		return nil, nil, VMNetInfo{}, fmt.Errorf("socketpair: %w", err)
	}
	unix.CloseOnExec(fds[0])
	unix.CloseOnExec(fds[1])
	ours := os.NewFile(uintptr(fds[0]), "vmnet")
	theirs := os.NewFile(uintptr(fds[1]), "vmnet-helper")
	defer theirs.Close()
	if err := unix.SetNonblock(fds[0], true); err != nil {
		ours.Close()
		return nil, nil, VMNetInfo{}, fmt.Errorf("socketpair: %w", err)
	}
	cmd := exec.Command(path, args...)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.SysProcAttr = helperSysProcAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		ours.Close()
		return nil, nil, VMNetInfo{}, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		ours.Close()
		return nil, nil, VMNetInfo{}, err
	}
	if err := cmd.Start(); err != nil {
		ours.Close()
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return nil, nil, VMNetInfo{}, fmt.Errorf("helper %s not found: install vmnet-helper (github.com/nirs/vmnet-helper) or give its path: %w", path, err)
		}
		return nil, nil, VMNetInfo{}, fmt.Errorf("starting helper %s: %w", path, err)
	}
	p := &helperProc{cmd: cmd, started: time.Now(), done: make(chan struct{})}
	var pipes sync.WaitGroup
	pipes.Add(1)
	go func() {
		defer pipes.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 4096), maxVMNetInfoLine)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.tail = append(p.tail, line)
			if len(p.tail) > stderrTail {
				p.tail = p.tail[1:]
			}
			p.mu.Unlock()
			log.Info("vmnet-helper", "pid", cmd.Process.Pid, "stderr", line)
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	lines := make(chan []byte, 1)
	pipes.Add(1)
	go func() {
		defer pipes.Done()
		r := bufio.NewReaderSize(stdout, 4096)
		first := true
		for {
			line, err := readLine(r, maxVMNetInfoLine)
			if err != nil {
				if first {
					close(lines)
				}
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
			if first {
				first = false
				lines <- line
				continue
			}
			log.Info("vmnet-helper", "pid", cmd.Process.Pid, "stdout", string(line))
		}
	}()
	go func() {
		pipes.Wait() // Wait closes the pipes: read them to the end first
		p.err = cmd.Wait()
		close(p.done)
	}()
	var line []byte
	select {
	case l, ok := <-lines:
		if !ok {
			<-p.done
			ours.Close()
			return nil, nil, VMNetInfo{}, fmt.Errorf("helper %s exited before describing the interface: %w", path, p.exitErr())
		}
		line = l
	case <-ctx.Done():
		p.stop()
		ours.Close()
		return nil, nil, VMNetInfo{}, fmt.Errorf("helper %s did not describe the interface in time: %w", path, ctx.Err())
	}
	info, err := ParseVMNetInfo(line)
	if err != nil {
		p.stop()
		ours.Close()
		return nil, nil, VMNetInfo{}, fmt.Errorf("helper %s: %w", path, err)
	}
	return p, ours, info, nil
}

// readLine reads one line of at most limit bytes (without its newline).
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit {
			return nil, fmt.Errorf("line longer than %d bytes", limit)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}

// exited reports whether the helper has exited.
func (p *helperProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitErr describes how the helper ended, with its last stderr lines.
func (p *helperProc) exitErr() error {
	if !p.exited() {
		return errors.New("helper still running")
	}
	p.mu.Lock()
	tail := strings.Join(p.tail, " | ")
	p.mu.Unlock()
	status := "exited with status 0"
	if p.err != nil {
		status = p.err.Error()
	}
	if tail == "" {
		return fmt.Errorf("helper (pid %d) %s", p.cmd.Process.Pid, status)
	}
	return fmt.Errorf("helper (pid %d) %s: %s", p.cmd.Process.Pid, status, tail)
}

// stop ends the helper: SIGTERM, then SIGKILL after helperStopGrace, and
// waits for it. It may be called more than once.
func (p *helperProc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(helperStopGrace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// setSocketBuffers asks for vmnetSocketBuffer on both directions of our
// end; failures only cost throughput, so they are ignored.
func setSocketBuffers(rc syscall.RawConn) {
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, vmnetSocketBuffer)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, vmnetSocketBuffer)
	})
}
