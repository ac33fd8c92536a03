package app

import (
	"fmt"
	"testing"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSettingsMovePrunesOldProject: project settings moved to another
// project (UpdateProjectSettings with a new project_id) take their group's
// access away from the old project on the move event itself, not at the
// next resync (5 minutes by default, the one this replica runs with): the
// old project's binding is gone once the event is handled.
func TestSettingsMovePrunesOldProject(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "mv1", nil, nil) // default RESYNC_INTERVAL (5m)
	ctx := t.Context()
	a, b := unique("mva"), unique("mvb")
	h.project(t, a)
	h.project(t, b)
	ps, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: a,
		GroupAccess: ptr(`[{"group":"team-x","role":"ambient-project-admin"}]`)})
	if err != nil {
		t.Fatal(err)
	}
	count := func(ns string) int {
		l, err := h.kube.RbacV1().RoleBindings(ns).List(ctx, metav1.ListOptions{LabelSelector: spec.InstanceSelector(h.instance)})
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}
	testenv.Eventually(t, wait, func() error {
		if n := count(a); n != 1 {
			return fmt.Errorf("%d bindings in %s", n, a)
		}
		return nil
	})
	if _, err := h.cl.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: ps.GetMetadata().GetId(), ProjectId: ptr(b)}); err != nil {
		t.Fatal(err)
	}
	h.quiesce(t, r)
	if n := count(b); n != 1 {
		t.Errorf("%d bindings in the new project %s, want 1", n, b)
	}
	if n := count(a); n != 0 {
		t.Errorf("group team-x still admin of %s (%d bindings) after the settings moved to %s", a, n, b)
	}
}
