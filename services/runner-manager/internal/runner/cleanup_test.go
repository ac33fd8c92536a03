package runner

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestRemoveWorkspace: only a directory a runner made (it holds a runner
// log) is listed and removed; an operator's directory in the root, a link
// and a plain file never are, nor the workspace of a runner that runs.
func TestRemoveWorkspace(t *testing.T) {
	t.Parallel()
	m := newManager(t, []string{demoRunner}, 2, 2)
	root := m.cfg.WorkspaceRoot
	mkdir := func(name string, files ...string) string {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(p, f), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	mkdir("gone", StdoutLog, StderrLog, PromptFile)
	mkdir("queued", PromptFile)             // a start that found no port wrote the prompt only
	mkdir("notes", "todo.txt")              // the operator's: no runner log
	target := mkdir("elsewhere", StderrLog) // reached through a link below
	if err := os.Symlink(target, filepath.Join(root, "linked")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "file"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := m.Start(t.Context(), Session{ID: "live", Name: "Live"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitHealthy(t.Context(), http.DefaultClient, fastHealth); err != nil {
		t.Fatal(err)
	}

	wss, err := m.Workspaces()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ws := range wss {
		ids = append(ids, ws.SessionID)
	}
	slices.Sort(ids)
	if want := []string{"elsewhere", "gone", "live", "queued"}; !slices.Equal(ids, want) {
		t.Fatalf("Workspaces = %v, want %v (runner-made directories only)", ids, want)
	}
	for _, id := range []string{"notes", "linked", "file", "live", "missing"} {
		if removed, err := m.RemoveWorkspace(id); removed || err != nil {
			t.Errorf("RemoveWorkspace(%q) = %v, %v; want nothing removed", id, removed, err)
		}
	}
	for _, name := range []string{"notes", "linked", "file", "live", filepath.Join("elsewhere", StderrLog)} {
		if _, err := os.Lstat(filepath.Join(root, name)); err != nil {
			t.Errorf("%s: %v, want it kept", name, err)
		}
	}
	for _, id := range []string{"gone", "queued"} {
		if removed, err := m.RemoveWorkspace(id); !removed || err != nil {
			t.Fatalf("RemoveWorkspace(%s) = %v, %v; want removed", id, removed, err)
		}
		if _, err := os.Lstat(filepath.Join(root, id)); !os.IsNotExist(err) {
			t.Fatalf("%s: %v, want it removed", id, err)
		}
	}
	trashEmpty := func() error {
		entries, err := os.ReadDir(filepath.Join(root, trashDir))
		if err != nil {
			return err
		}
		if len(entries) > 0 {
			return fmt.Errorf("trash holds %d entries", len(entries))
		}
		return nil
	}
	testenv.Eventually(t, 10*time.Second, trashEmpty) // deleted off the lock, on a goroutine of its own
	if wss, err := m.Workspaces(); err != nil || len(wss) != 2 {
		t.Fatalf("Workspaces after the removals = %v, %v; want elsewhere and live only (not the trash)", wss, err)
	}

	// Once its runner has exited, the session's workspace may go.
	if err := syscall.Kill(-p.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p, 10*time.Second)
	testenv.Eventually(t, 10*time.Second, func() error { // the waiter forgets the process just after Done
		if _, running := m.Get("live"); running {
			return errors.New("runner still tracked")
		}
		return nil
	})
	if removed, err := m.RemoveWorkspace("live"); !removed || err != nil {
		t.Fatalf("RemoveWorkspace(live) after its runner exited = %v, %v; want removed", removed, err)
	}
}
