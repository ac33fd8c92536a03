//go:build !linux

package runner

import "syscall"

// sysProcAttr puts the runner in its own process group.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
