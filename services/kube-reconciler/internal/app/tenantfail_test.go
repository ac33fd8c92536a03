package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// webhookDown is what the kube-apiserver answers (500, InternalError) when
// a webhook with failurePolicy Fail cannot be called.
const webhookDown = "failed calling webhook"

// downWebhook installs a ValidatingWebhookConfiguration whose one webhook,
// failurePolicy Fail, covers AgenticSession creates and updates in
// namespace ns only and points at a closed local port: every such write in
// ns is answered 500 "failed calling webhook", as when a tenant's admission
// webhook is down. It returns the configuration's name; cleanup deletes it.
func downWebhook(t *testing.T, h *harness, ns string) string {
	t.Helper()
	// A port that was just free: nothing listens there, so the apiserver's
	// call is refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/validate", port)
	fail, none, scope := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone, admissionregistrationv1.NamespacedScope
	name := "down-" + ns
	wh := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         ns + ".down.tenant.example.com",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{spec.Group}, APIVersions: []string{spec.Version}, Resources: []string{spec.Resource}, Scope: &scope},
			}},
			FailurePolicy: &fail,
			// The apiserver labels every namespace with its name: only
			// this tenant's namespace is affected (the API server is shared
			// by the package's tests).
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}},
			SideEffects:             &none, // so dry-run requests call it too (webhookActive)
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr(int32(5)),
		}},
	}
	hooks := h.kube.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if _, err := hooks.Create(t.Context(), wh, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// t.Context is done by now.
		if err := hooks.Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete webhook configuration %s: %v", name, err)
		}
	})
	return name
}

// webhookActive returns nil once the apiserver calls ns's down webhook
// (wantDown) or no longer does (!wantDown), judged by a dry-run create of
// an AgenticSession in ns: the apiserver's webhook configuration comes from
// its informer, so it follows a create or delete only after a moment.
func (h *harness) webhookActive(t *testing.T, ns string, wantDown bool) func() error {
	return func() error {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": spec.Group + "/" + spec.Version, "kind": spec.Kind,
			"metadata": map[string]any{"name": "webhook-probe"}, "spec": map[string]any{},
		}}
		_, err := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(ns).Create(t.Context(), u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		down := err != nil && apierrors.IsInternalError(err) && strings.Contains(err.Error(), webhookDown)
		switch {
		case down == wantDown:
			return nil
		case err != nil && !down:
			return fmt.Errorf("dry-run create in %s: %w", ns, err)
		default:
			return fmt.Errorf("dry-run create in %s: webhook down %t, want %t (err %v)", ns, down, wantDown, err)
		}
	}
}

// failedTries counts, per session of ids in project, the tries of its
// events that failed with the down webhook and were retried (the group's
// "event handling failed, retrying" record); a try failing otherwise is an
// error.
func failedTries(t *testing.T, r *replica, prefix, project string, ids []string) (map[string]int, error) {
	t.Helper()
	bySubject := map[string]string{}
	for _, id := range ids {
		bySubject[events.Subject(prefix, eventsv1.Resource_RESOURCE_SESSIONS, project, id)] = id
	}
	tries := map[string]int{}
	var errs []error
	for _, rec := range r.logs.Lines(t, "event handling failed, retrying", nil) {
		subject, _ := rec[logkey.Subject].(string)
		id, ok := bySubject[subject]
		if !ok {
			continue
		}
		if msg, _ := rec[logkey.Err].(string); !strings.Contains(msg, webhookDown) {
			errs = append(errs, fmt.Errorf("session %s failed otherwise: %s", id, msg))
			continue
		}
		tries[id]++
	}
	return tries, errors.Join(errs...)
}

// TestOneTenantsFailuresDoNotStallOthers (group ParkFailures, at the
// service): tenant A's admission webhook is down, so the kube-apiserver
// answers every AgenticSession write in A's namespace 500 "failed calling
// webhook", which the reconciler retries. With GROUP_MAX_IN_FLIGHT 2 the
// consumer's window is 4 messages and six A sessions fail at once; their
// retries wait a minute. Without parking the four lanes in backoff held
// the whole window: A's last two sessions, and every session of tenant B
// on the member's partitions, waited for a backoff to end. With it, all six
// A sessions are tried, and B's sessions get their AgenticSessions while
// every A session is still at its first try, each waiting from memory
// (consumer_group_parked_objects). Once the webhook is back, A's parked
// retries, at their second try, make A's AgenticSessions, with no dead
// letter.
func TestOneTenantsFailuresDoNotStallOthers(t *testing.T) {
	h := newHarness(t)
	const (
		maxInFlight = 2
		window      = 2 * maxInFlight
		failing     = window + 2
		others      = 3
		// backoff is every retry's wait: longer than every wait of the
		// first phase (wait), so no retry can make it pass.
		backoff = time.Minute
	)
	var prefix string
	r := h.startTuned(t, "park1", nil, map[string]string{
		group.EnvMaxInFlight: fmt.Sprint(maxInFlight),
		// No resync pass during the test: A's sessions are made by their
		// parked retries, or not at all.
		config.EnvResyncInterval: "1h",
	}, func(cfg *config.Config) {
		cfg.Group.Backoff = []time.Duration{backoff}
		prefix = cfg.Group.SubjectPrefix
	})
	if prefix == "" {
		prefix = events.SubjectPrefix
	}
	ctx := t.Context()
	a, b := unique("parka"), unique("parkb")
	for _, p := range []string{a, b} {
		h.project(t, p)
		testenv.Eventually(t, wait, func() error {
			_, err := h.kube.CoreV1().Namespaces().Get(ctx, p, metav1.GetOptions{})
			return err
		})
	}
	h.quiesce(t, r)
	hook := downWebhook(t, h, a)
	testenv.Eventually(t, wait, h.webhookActive(t, a, true))
	if err := h.webhookActive(t, b, false)(); err != nil {
		t.Fatalf("tenant B's namespace is affected by A's webhook: %v", err)
	}

	idsA := h.createSessions(t, a, failing)
	// Every A session is tried once and fails: more objects than the
	// window holds, so without parking the last two are never delivered
	// before a backoff ends.
	testenv.Eventually(t, wait, func() error {
		tries, err := failedTries(t, r, prefix, a, idsA)
		if err != nil {
			return err
		}
		for _, id := range idsA {
			if tries[id] == 0 {
				return fmt.Errorf("A's session %s not tried yet (failed tries %v, %+v)", id, tries, r.stats.Snapshot())
			}
		}
		return nil
	})

	// Tenant B is served while A's sessions wait out their backoff.
	idsB := h.createSessions(t, b, others)
	for _, id := range idsB {
		h.waitCR(t, b, lower(id), nil)
	}
	tries, err := failedTries(t, r, prefix, a, idsA)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range idsA {
		if tries[id] != 1 {
			t.Errorf("A's session %s failed %d times before B's sessions were made, want 1 (still waiting out its first backoff)", id, tries[id])
		}
		if _, err := h.cr(t, a, lower(id)); !apierrors.IsNotFound(err) {
			t.Errorf("A's session %s has an AgenticSession (%v) while its webhook is down", id, err)
		}
	}
	// At most window messages of A's are held unacked: the others' work
	// waits in memory.
	st := r.stats.Snapshot()
	if st.ParkedObjects < failing-window || st.Parked < uint64(failing-window) {
		t.Errorf("%d objects parked (%d events), want at least %d: %+v", st.ParkedObjects, st.Parked, failing-window, st)
	}
	body := get(t, "http://"+r.addr.String()+"/metrics")
	if got, ok := testenv.MetricSum(body, "consumer_group_parked_objects", `group="kube-reconciler"`); !ok || got < failing-window {
		t.Errorf("consumer_group_parked_objects = %v (found %t), want at least %d", got, ok, failing-window)
	}
	if t.Failed() {
		return
	}

	// The webhook comes back (here: goes away). A's parked retries, a
	// backoff after their first try, make A's AgenticSessions.
	if err := h.kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, hook, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, h.webhookActive(t, a, false))
	testenv.Eventually(t, backoff+wait, func() error {
		for _, id := range idsA {
			if _, err := h.cr(t, a, lower(id)); err != nil {
				return fmt.Errorf("A's session %s: %w (%+v)", id, err, r.stats.Snapshot())
			}
		}
		return nil
	})
	if tries, err = failedTries(t, r, prefix, a, idsA); err != nil {
		t.Fatal(err)
	}
	for _, id := range idsA {
		if tries[id] != 1 {
			t.Errorf("A's session %s failed %d times, want 1: its second try made it", id, tries[id])
		}
	}
	testenv.Eventually(t, wait, func() error {
		if st := r.stats.Snapshot(); st.ParkedObjects != 0 {
			return fmt.Errorf("%d objects still parked: %+v", st.ParkedObjects, st)
		}
		return nil
	})
	if n := r.stats.Snapshot().DeadLettered; n != 0 {
		t.Errorf("%d events dead-lettered", n)
	}
}
