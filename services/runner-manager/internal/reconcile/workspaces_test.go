package reconcile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestResyncRemovesWorkspacesOfDeletedSessions: a session deleted while no
// event reached this replica loses its runner (stopOrphans) and then its
// workspace, with the prompt and logs in it; a live session's workspace
// and a directory no runner made stay.
func TestResyncRemovesWorkspacesOfDeletedSessions(t *testing.T) {
	e := newEnv(t)
	rp := e.replica(replicaOpts{resync: 200 * time.Millisecond})
	gone, kept := e.create("gone"), e.create("kept")
	goneID, keptID := gone.GetMetadata().GetId(), kept.GetMetadata().GetId()
	e.startRunning(rp, gone)
	e.startRunning(rp, kept)
	notes := filepath.Join(rp.root, "notes")
	if err := os.Mkdir(notes, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := e.client.DeleteSession(t.Context(), goneID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if _, err := os.Lstat(filepath.Join(rp.root, goneID)); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("workspace of the deleted session: %v, want it removed", err)
		}
		return nil
	})
	for _, p := range []string{filepath.Join(rp.root, keptID), notes} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s: %v, want it kept", p, err)
		}
	}
}
