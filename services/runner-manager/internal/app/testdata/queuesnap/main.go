// Command queuesnap is a test runner command: it writes the kernel's TCP
// socket tables (/proc/net/tcp and /proc/net/tcp6) as they are when
// runner-manager starts it into queues.txt in its working directory (the
// session's workspace), then becomes the runner command its arguments
// name (exec: same pid, environment and process group). The tables hold,
// for each listening socket, how many connections wait in its accept
// queue; a SIGSTOPped runner accepts none, so its queue counts every
// connection made to it since it was stopped. A test reads the file to
// know how many probes had reached the frozen runners at the moment this
// runner was started: a snapshot tied to the service's own step (the
// spawn that follows a takeover), which a test that samples the tables
// itself can miss on a loaded machine.
package main

import (
	"fmt"
	"os"
	"syscall"
)

// File is the snapshot's name in the working directory.
const File = "queues.txt"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "queuesnap: usage: queuesnap COMMAND [ARG...]")
		os.Exit(2)
	}
	var snap []byte
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil && !os.IsNotExist(err) { // no IPv6: no tcp6
			fmt.Fprintln(os.Stderr, "queuesnap:", err)
			os.Exit(1)
		}
		snap = append(snap, b...)
	}
	if err := os.WriteFile(File, snap, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "queuesnap:", err)
		os.Exit(1)
	}
	err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ()) // returns only on failure
	fmt.Fprintln(os.Stderr, "queuesnap: exec:", err)
	os.Exit(1)
}
