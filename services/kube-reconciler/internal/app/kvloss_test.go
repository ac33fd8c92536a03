package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestEmptyObjectsBucketDeletesNothing: KV ambient-objects comes back empty
// (NATS lost its store, the bucket was deleted; the informer relists much
// later, or not at all while the API is down). The resync must not take
// "not in KV" for "deleted": the live session's CR and the project's
// RoleBinding stay, since the API still has them. Orphans the API confirms
// are still removed: a CR of a session the API does not know, and a managed
// binding of a project no settings name.
func TestEmptyObjectsBucketDeletesNothing(t *testing.T) {
	h := newHarness(t)
	const interval = 2 * time.Second
	r := h.start(t, "kvloss", nil, map[string]string{config.EnvResyncInterval: interval.String()})
	ctx := t.Context()
	name, bare := unique("kvloss"), unique("kvloss-bare")
	h.project(t, name)
	h.project(t, bare) // no settings: a managed binding in it is an orphan
	if _, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: name,
		GroupAccess: ptr(`[{"group":"team-x","role":"ambient-project-edit"}]`)}); err != nil {
		t.Fatal(err)
	}
	s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", ProjectId: ptr(name)})
	if err != nil {
		t.Fatal(err)
	}
	live := lower(s.GetMetadata().GetId())
	u := h.waitCR(t, name, live, nil)
	const binding = "ambient-team-x-ambient-project-edit"
	testenv.Eventually(t, wait, func() error {
		_, err := h.kube.RbacV1().RoleBindings(name).Get(ctx, binding, metav1.GetOptions{})
		return err
	})
	testenv.Eventually(t, wait, func() error {
		_, err := h.kube.CoreV1().Namespaces().Get(ctx, bare, metav1.GetOptions{})
		return err
	})
	h.quiesce(t, r)

	// Real orphans, their sources gone from the API too: a CR of an
	// unknown session, a binding of a project without settings.
	gone := u.DeepCopy()
	goneID := "gone-" + name
	gone.SetName(live + "-gone")
	gone.SetResourceVersion("")
	gone.SetUID("")
	gone.SetCreationTimestamp(metav1.Time{})
	delete(gone.Object, "status")
	ann := gone.GetAnnotations()
	ann[spec.AnnotationSessionID] = goneID
	gone.SetAnnotations(ann)
	if _, err := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(name).Create(ctx, gone, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	orphanRB, err := h.kube.RbacV1().RoleBindings(name).Get(ctx, binding, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	orphanRB.ObjectMeta = metav1.ObjectMeta{Name: binding, Namespace: bare, Labels: orphanRB.Labels}
	orphanRB.Labels[spec.LabelProjectID] = bare
	if _, err := h.kube.RbacV1().RoleBindings(bare).Create(ctx, orphanRB, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	cfg := bus.ObjectsBucket(1)
	if err := h.js.DeleteKeyValue(ctx, cfg.Bucket); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureKV(ctx, h.js, cfg); err != nil {
		t.Fatal(err)
	}
	// The orphans' deletion proves passes ran on the empty bucket; one more
	// pass done after it has checked every CR and binding at least once.
	waitResyncDeletion(t, r, goneID)
	testenv.Eventually(t, wait, func() error {
		if _, err := h.kube.RbacV1().RoleBindings(bare).Get(ctx, binding, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("orphan binding of project %s without settings still there: %v", bare, err)
		}
		return nil
	})
	passes := len(r.logs.Lines(t, "resync pass done", nil))
	testenv.Eventually(t, wait, func() error {
		if n := len(r.logs.Lines(t, "resync pass done", nil)); n <= passes {
			return fmt.Errorf("%d passes done, waiting for one more than %d", n, passes)
		}
		return nil
	})
	if _, err := h.cr(t, name, live); err != nil {
		t.Errorf("the live session's CR was deleted on an empty objects bucket: %v", err)
	}
	if _, err := h.kube.RbacV1().RoleBindings(name).Get(ctx, binding, metav1.GetOptions{}); err != nil {
		t.Errorf("the binding of live settings was pruned on an empty objects bucket: %v", err)
	}
	if got := r.logs.Lines(t, "resync kept orphans the ambient API still has: KV ambient-objects is behind", nil); len(got) == 0 {
		t.Errorf("no pass logged the orphans it kept")
	}
}
