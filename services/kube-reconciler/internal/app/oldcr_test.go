package app

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// TestSessionLosesItsOldCR: a session that had a CR and changes so that
// the CR is no longer the one wanted loses it. Neither case can find the old
// CR from the session's new state: only the status informer's index of the
// session's CRs does, so each subtest first waits for the write-back of
// kube_namespace, which proves the informer has seen the CR.
func TestSessionLosesItsOldCR(t *testing.T) {
	h := newHarness(t)
	h.start(t, "old1", nil, nil)
	ctx := t.Context()
	name := unique("old")
	pid := h.project(t, name).GetMetadata().GetId()
	// withCR creates a session in project pid and waits until its CR is
	// indexed for it.
	withCR := func(t *testing.T, sname string) (id, crName string) {
		t.Helper()
		s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: sname, ProjectId: ptr(pid)})
		if err != nil {
			t.Fatal(err)
		}
		id, crName = s.GetMetadata().GetId(), lower(s.GetKubeCrName())
		h.waitCR(t, name, crName, nil)
		h.waitSessions(t, []string{id}, "kube_namespace", func(s *ambientv1.Session) bool { return s.GetKubeNamespace() == name })
		return id, crName
	}
	gone := func(t *testing.T, ns, crName string) func() error {
		return func() error {
			if _, err := h.cr(t, ns, crName); !apierrors.IsNotFound(err) {
				return fmt.Errorf("CR %s/%s still there: %v", ns, crName, err)
			}
			return nil
		}
	}

	// A valid session made malformed: its CR is deleted (its status would
	// otherwise overwrite the failure) and the session is Failed.
	t.Run("malformed", func(t *testing.T) {
		id, crName := withCR(t, "bad-later")
		if _, err := h.cl.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, Labels: ptr(`{`)}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, wait, gone(t, name, crName))
		h.waitSessions(t, []string{id}, "phase Failed with InvalidSpec on labels", func(s *ambientv1.Session) bool {
			return s.GetPhase() == "Failed" && strings.Contains(s.GetConditions(), "InvalidSpec") && strings.Contains(s.GetConditions(), "field labels")
		})
	})

	// A session moved to another project: the CR is made in the new
	// project's namespace, and the one in the old namespace is deleted.
	t.Run("moved", func(t *testing.T) {
		id, crName := withCR(t, "mover")
		to := unique("old-to")
		toID := h.project(t, to).GetMetadata().GetId()
		if _, err := h.cl.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, ProjectId: ptr(toID)}); err != nil {
			t.Fatal(err)
		}
		h.waitCR(t, to, crName, nil)
		testenv.Eventually(t, wait, gone(t, name, crName))
	})
}
