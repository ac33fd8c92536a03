package runner

import "syscall"

// sysProcAttr puts the runner in its own process group (so signals reach its
// children) and asks the kernel to SIGKILL it if runner-manager dies without
// cleaning up (kill -9), so no runner outlives its manager.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
