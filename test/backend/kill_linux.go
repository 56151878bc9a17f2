//go:build linux

package backend

import (
	"fmt"
	"syscall"
	"time"
)

// Kill sends SIGKILL to the process by its PID (a crash: nothing of its own
// clean-up runs) and waits up to timeout for the exit, which it returns the
// time of. The process must still be running.
func (p *Process) Kill(timeout time.Duration) (time.Time, error) {
	if p.Exited() {
		return time.Time{}, fmt.Errorf("backend %s had already exited (%s)", p.Name, p.State())
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return time.Time{}, err
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("backend %s: no exit %v after SIGKILL", p.Name, timeout)
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return time.Time{}, fmt.Errorf("backend %s: exit after SIGKILL: %s", p.Name, p.State())
	}
	return time.Now(), nil
}
