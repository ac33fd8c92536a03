package crd_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/crd"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
	"github.com/google/go-cmp/cmp"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const dropMsg = "field not declared by the agenticsession crd, dropped"

// TestWatcherFollowsCRD, on a real kube-apiserver: without the CRD nothing is
// pruned or applied (ErrNotInstalled, readiness fails); with an older CRD
// (no llmSettings) the field is dropped and logged once for any number of
// sessions; when the CRD gains the field at runtime it is kept from then on;
// when the CRD is deleted the watcher refuses again.
func TestWatcherFollowsCRD(t *testing.T) {
	env := kubetest.StartT(t, kubetest.WithCRDs())
	ctx := t.Context()
	logs, log := kubetest.NewLogs()
	w := env.Watcher(t, log)
	// A second watcher starts while the API server is still starting (its
	// first answers are 503), then is refused twice: it waits out the start
	// at kubewatch's pace instead of failing to its reflector, which would
	// back off for up to a minute; the refusals, answers, go to the
	// reflector, which logs them to the service's log and lists again.
	startingLogs, startingLog := kubetest.NewLogs()
	front, startingCfg := kubetest.StartingFront(t, env.Config, 503, 503, 503, 403, 403)
	late := kubetest.RunWatcher(t, startingCfg, startingLog)
	if n := front.Requests(); n <= 5 {
		t.Fatalf("front had %d requests, want the 5 it answered and more", n)
	}
	kubetest.CheckOnlyRefusalsLogged(t, startingLogs)
	client, err := apiextclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	crds := client.ApiextensionsV1().CustomResourceDefinitions()

	// No CRD: refuse, leave the object alone.
	if err := w.Check(ctx); !errors.Is(err, crd.ErrNotInstalled) {
		t.Fatalf("Check without crd = %v, want ErrNotInstalled", err)
	}
	u := desiredObject(t, fullSession("s0"))
	before := u.DeepCopy()
	if err := w.PruneSession(u); !errors.Is(err, crd.ErrNotInstalled) {
		t.Fatalf("PruneSession without crd = %v, want ErrNotInstalled", err)
	}
	if diff := cmp.Diff(before.Object, u.Object); diff != "" {
		t.Errorf("object changed without a crd:\n%s", diff)
	}

	// An older operator CRD without llmSettings.
	older := operatorCRD(t, func(sp, _ *apiextensionsv1.JSONSchemaProps) { delete(sp.Properties, "llmSettings") })
	if _, err := crds.Create(ctx, older, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error { return w.Check(ctx) })
	testenv.Eventually(t, 30*time.Second, func() error { return late.Check(ctx) })
	for i := range 3 {
		u := desiredObject(t, fullSession(fmt.Sprint("s", i)))
		if err := w.PruneSession(u); err != nil {
			t.Fatal(err)
		}
		if _, found, _ := unstructured.NestedMap(u.Object, "spec", "llmSettings"); found {
			t.Errorf("session %d: spec.llmSettings kept on a crd without it", i)
		}
		if got, _, _ := unstructured.NestedString(u.Object, "spec", "initialPrompt"); got != "p" {
			t.Errorf("session %d: initialPrompt = %q, a declared field was lost", i, got)
		}
	}
	if n := len(logs.Lines(t, dropMsg, nil)); n != 1 {
		t.Errorf("%d drop log lines for 3 sessions, want 1", n)
	}
	if n := len(logs.Lines(t, dropMsg, map[string]string{logkey.FieldPath: "spec.llmSettings"})); n != 1 {
		t.Errorf("%d drop log lines for spec.llmSettings, want 1", n)
	}

	// The CRD gains llmSettings at runtime (an operator upgrade).
	cur, err := crds.Get(ctx, crd.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Versions = operatorCRD(t, nil).Spec.Versions
	updated, err := crds.Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		s, err := w.Schema()
		if err != nil {
			return err
		}
		if s.ResourceVersion != updated.ResourceVersion {
			return fmt.Errorf("schema of resourceVersion %s, want %s", s.ResourceVersion, updated.ResourceVersion)
		}
		return nil
	})
	u = desiredObject(t, fullSession("s9"))
	want := u.DeepCopy()
	if err := w.PruneSession(u); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Object, u.Object); diff != "" {
		t.Errorf("pruned with the full crd (-want +got):\n%s", diff)
	}
	if n := len(logs.Lines(t, dropMsg, nil)); n != 1 {
		t.Errorf("%d drop log lines after the crd gained the field, want still 1", n)
	}
	// The informer updates its store (which Schema reads) before it calls
	// the handler that logs the change: wait for the line, then count.
	changed := func() int {
		return len(logs.Lines(t, "agenticsession crd changed", map[string]string{logkey.Version: updated.ResourceVersion}))
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if changed() == 0 {
			return errors.New("crd change not logged yet")
		}
		return nil
	})
	if n := changed(); n != 1 {
		t.Errorf("crd change logged %d times, want 1", n)
	}

	// Deleted: refuse again.
	if err := crds.Delete(ctx, crd.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := w.Check(ctx); !errors.Is(err, crd.ErrNotInstalled) {
			return fmt.Errorf("Check after delete = %v, want ErrNotInstalled", err)
		}
		return nil
	})
}
