package hostif

import "syscall"

// helperSysProcAttr puts the helper in its own process group (Ctrl-C
// reaches vhost-arcnet only, which stops the helper) and has the kernel
// kill it if vhost-arcnet dies without stopping it (PR_SET_PDEATHSIG).
func helperSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
