//go:build unix && !linux && !darwin

package hostif

import "syscall"

// helperSysProcAttr puts the helper in its own process group: Ctrl-C
// reaches vhost-arcnet only, which stops the helper.
func helperSysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
