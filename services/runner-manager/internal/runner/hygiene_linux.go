package runner

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// NonDumpable makes this process non-dumpable (prctl PR_SET_DUMPABLE 0).
// A process of the same user without CAP_SYS_PTRACE - a runner - can then
// no longer read its /proc/<pid>/environ (the API token and NATS password
// when they were passed as variables), mem, maps or fds, nor ptrace it;
// and it writes no core dump. Runners are unaffected: execve makes a
// process dumpable again. A root runner (CAP_SYS_PTRACE) still can: run
// runner-manager as a non-root user.
func NonDumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make runner-manager non-dumpable: %w", err)
	}
	return nil
}
