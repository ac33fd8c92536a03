package app

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
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

// TestMovedSessionOldCRWritesNoStatus: a session moved to another project
// gets a CR in the new namespace, and its old CR is deleted. The old one can
// outlive the move: the operator's finalizer keeps it (deletionTimestamp
// set) while it tears the runner down, or Kubernetes refuses the delete (it
// is retried, then left to the resync). The operator sets the old CR's
// status meanwhile. The write-back carries only the session's current CR
// to the API: the old CR's status (its phase, uid, namespace) written over
// the new CR's showed the session as stopping in the project it left, and
// the new CR's write-back put it back, over and over.
func TestMovedSessionOldCRWritesNoStatus(t *testing.T) {
	tests := []struct {
		name         string
		finalizer    bool // the operator's finalizer holds the old CR
		refuseDelete bool // Kubernetes refuses the old CR's delete
	}{
		{"held by the operator's finalizer", true, false},
		{"delete refused", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			var (
				faulty  *faultyUser
				restCfg *rest.Config
			)
			if tc.refuseDelete {
				faulty, restCfg = newFaultyUser(t, h)
			}
			r := h.start(t, "mv1", restCfg, nil)
			ctx := t.Context()
			from, to := unique("mv-from"), unique("mv-to")
			fromID, toID := h.project(t, from).GetMetadata().GetId(), h.project(t, to).GetMetadata().GetId()
			s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "mover", ProjectId: ptr(fromID)})
			if err != nil {
				t.Fatal(err)
			}
			id, crName := s.GetMetadata().GetId(), lower(s.GetKubeCrName())
			h.waitCR(t, from, crName, nil)
			h.waitSessions(t, []string{id}, "kube_namespace", func(s *ambientv1.Session) bool { return s.GetKubeNamespace() == from })
			crs := h.dyn.Resource(apply.AgenticSessionGVR)
			if tc.finalizer {
				finalizer := func(ctx context.Context, fs string) {
					t.Helper()
					patch := fmt.Sprintf(`{"metadata":{"finalizers":%s}}`, fs)
					if _, err := crs.Namespace(from).Patch(ctx, crName, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "operator"}); err != nil && !apierrors.IsNotFound(err) {
						t.Fatal(err)
					}
				}
				finalizer(ctx, `["vteam.ambient-code/cleanup"]`)
				t.Cleanup(func() { finalizer(context.Background(), `null`) })
			}
			if tc.refuseDelete {
				faulty.withoutDelete(t, true)
			}
			// Writes from the old CR, counted from its own log lines: the
			// new CR's write-back puts the new status back right after
			// each, so the API shows the old one only for a moment.
			oldName := from + "/" + crName
			oldWrites := func() int {
				return len(r.logs.Lines(t, "session status written", map[string]string{logkey.Name: oldName}))
			}
			moved := oldWrites()
			if _, err := h.cl.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, ProjectId: ptr(toID)}); err != nil {
				t.Fatal(err)
			}
			cur := h.waitCR(t, to, crName, nil)
			if tc.finalizer {
				h.waitCR(t, from, crName, func(u *unstructured.Unstructured) error {
					if u.GetDeletionTimestamp() == nil {
						return fmt.Errorf("old CR %s not being deleted", oldName)
					}
					return nil
				})
			}
			h.setCRStatus(t, to, crName, map[string]any{"phase": "Running"})
			h.waitSession(t, id, func(s *ambientv1.Session) error {
				if s.GetKubeNamespace() != to || s.GetKubeCrUid() != string(cur.GetUID()) {
					return fmt.Errorf("kube_namespace %q kube_cr_uid %q, want the new CR's %q %q", s.GetKubeNamespace(), s.GetKubeCrUid(), to, cur.GetUID())
				}
				return wantPhase(s, "Running")
			})

			// The operator tears the old CR's runner down.
			skipped := func() int {
				return len(r.logs.Lines(t, "status of a replaced agenticsession not written", map[string]string{logkey.Name: oldName}))
			}
			before := skipped()
			h.setCRStatus(t, from, crName, map[string]any{"phase": "Stopping",
				"conditions": []any{map[string]any{"type": "Ready", "status": "False", "reason": "Terminating"}}})
			testenv.Eventually(t, wait, func() error {
				if n := oldWrites() - moved; n > 0 {
					t.Fatalf("the old CR %s wrote its status to the API %d times after the session moved to %s", oldName, n, to)
				}
				got, err := h.cl.GetSession(ctx, id)
				if err != nil {
					return err
				}
				if got.GetKubeNamespace() != to || got.GetPhase() != "Running" || got.GetKubeCrUid() != string(cur.GetUID()) {
					t.Fatalf("the old CR's status was written over the new one's: kube_namespace %q (want %q), phase %q (want Running), kube_cr_uid %q (want %q)",
						got.GetKubeNamespace(), to, got.GetPhase(), got.GetKubeCrUid(), cur.GetUID())
				}
				if skipped() == before {
					return fmt.Errorf("the write-back has not looked at the old CR's new status yet")
				}
				return nil
			})
		})
	}
}
