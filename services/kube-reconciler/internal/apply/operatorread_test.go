package apply

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestOperatorReadsTheSpec: every spec field the reconciler writes reaches
// the session operator under the name and with the type the operator reads
// it (ambient-code/platform, components/operator: the runner pod's
// environment is built from a fresh Get of the CR through a dynamic client,
// read with the unstructured accessors used here). An accessor that fails
// leaves the operator with the zero value, so a field of the wrong JSON type
// is as lost as a missing one.
//
// Whole-number temperatures are the case that needs care: the kube-apiserver
// stores 1.0 as the JSON integer 1, which decodes as int64, and
// NestedFloat64 then fails: the operator would run the session at
// temperature 0.
func TestOperatorReadsTheSpec(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cs, dyn := clients(t)
	a := New(cs, dyn, kube.Env(t).Watcher(t, slog.New(slog.DiscardHandler)))
	ns := uniqueNS("opread")
	if err := a.Namespace(ctx, spec.Namespace{Name: ns, Labels: spec.ManagedLabels("p")}); err != nil {
		t.Fatal(err)
	}
	for i, temp := range []float64{0.7, 1, 2, 0, 0.25, -1} {
		t.Run(fmt.Sprint("temperature ", temp), func(t *testing.T) {
			s := &ambientv1.Session{
				Metadata: &ambientv1.ObjectReference{Id: fmt.Sprintf("read%d", i)}, Name: "display", ProjectId: proto.String("p"),
				Prompt: proto.String("do it"), Timeout: proto.Int32(600), LlmModel: proto.String("opus"),
				LlmTemperature: proto.Float64(temp), LlmMaxTokens: proto.Int32(100), CreatedByUserId: proto.String("u-1"),
				EnvironmentVariables: proto.String(`{"A":"1","RUNNER_TYPE":"claude"}`),
				Repos:                proto.String(`[{"url":"https://git/a","autoPush":true},{"url":"https://git/b","branch":"dev"}]`),
			}
			desired, err := spec.Session(s, ns)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Session(ctx, desired); err != nil {
				t.Fatal(err)
			}
			cr, err := dyn.Resource(AgenticSessionGVR).Namespace(ns).Get(ctx, desired.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			sp, _, err := unstructured.NestedMap(cr.Object, "spec")
			if err != nil {
				t.Fatal(err)
			}
			str := func(want string, path ...string) {
				t.Helper()
				if got, found, err := unstructured.NestedString(sp, path...); err != nil || !found || got != want {
					t.Errorf("spec %v = %q (found %v, %v), want %q", path, got, found, err, want)
				}
			}
			integer := func(want int64, path ...string) {
				t.Helper()
				if got, found, err := unstructured.NestedInt64(sp, path...); err != nil || !found || got != want {
					t.Errorf("spec %v = %d (found %v, %v), want %d", path, got, found, err, want)
				}
			}
			str("display", "displayName")
			str("do it", "initialPrompt")
			integer(600, "timeout")
			str("opus", "llmSettings", "model")
			integer(100, "llmSettings", "maxTokens")
			str("u-1", "userContext", "userId")
			// The operator formats the temperature with two decimals
			// (LLM_TEMPERATURE) and uses 0 when it cannot read it.
			got, _, err := unstructured.NestedFloat64(sp, "llmSettings", "temperature")
			if temp != 0 && err != nil {
				t.Errorf("spec.llmSettings.temperature unreadable as the operator reads it (it would run at 0): %v", err)
			}
			if g, w := fmt.Sprintf("%.2f", got), fmt.Sprintf("%.2f", temp); g != w {
				t.Errorf("LLM_TEMPERATURE the operator derives = %s, want %s", g, w)
			}
			// environmentVariables: an object of strings (a value of
			// another type is skipped by the operator).
			env, _, _ := unstructured.NestedMap(sp, "environmentVariables")
			if len(env) != 2 || env["A"] != "1" || env["RUNNER_TYPE"] != "claude" {
				t.Errorf("spec.environmentVariables = %v, want A=1 RUNNER_TYPE=claude as strings", env)
			}
			// repos: a list of objects with url and branch strings (the
			// operator defaults an empty branch to main, so ours is always
			// set) and autoPush a bool.
			repos, _, err := unstructured.NestedSlice(sp, "repos")
			if err != nil || len(repos) != 2 {
				t.Fatalf("spec.repos = %v (%v), want 2 entries", repos, err)
			}
			wantRepos := []struct {
				url, branch string
				autoPush    any
			}{{"https://git/a", "ambient/" + desired.Name, true}, {"https://git/b", "dev", nil}}
			for i, w := range wantRepos {
				r, ok := repos[i].(map[string]any)
				url, _ := r["url"].(string)
				branch, _ := r["branch"].(string)
				if !ok || url != w.url || branch != w.branch || r["autoPush"] != w.autoPush {
					t.Errorf("spec.repos[%d] = %v, want url %s branch %s autoPush %v", i, repos[i], w.url, w.branch, w.autoPush)
				}
			}
		})
	}
}

// TestOperatorReadsTheParent: a continuation's CR carries its parent as the
// session operator reads it, from a fresh Get's metadata under the
// operator's literal key `vteam.ambient-code/parent-session-id` (trimmed),
// and the value is the name of the parent's AgenticSession in the same
// namespace, as the platform's backend writes it (it Gets the parent CR by
// that name). A parent_session_id cleared later takes the annotation away
// (server-side apply removes a field its manager stops setting), so the
// operator no longer treats the session as a continuation.
func TestOperatorReadsTheParent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cs, dyn := clients(t)
	a := New(cs, dyn, kube.Env(t).Watcher(t, slog.New(slog.DiscardHandler)))
	ns := uniqueNS("opparent")
	if err := a.Namespace(ctx, spec.Namespace{Name: ns, Labels: spec.ManagedLabels("p")}); err != nil {
		t.Fatal(err)
	}
	// Ids as the real API server makes them (mixed-case KSUIDs), with
	// kube_cr_name set to the id as it does on create.
	const parentID, childID = "2zQ8kHa0RlM4pTn1cXvBwE7yUdF", "2zQ8kHa0RlM4pTn1cXvBwE7yUdG"
	apply := func(s *ambientv1.Session) *spec.AgenticSession {
		t.Helper()
		desired, err := spec.Session(s, ns)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Session(ctx, desired); err != nil {
			t.Fatal(err)
		}
		return desired
	}
	parent := apply(&ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: parentID}, Name: "first", ProjectId: proto.String("p"), KubeCrName: proto.String(parentID)})
	child := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: childID}, Name: "continued", ProjectId: proto.String("p"),
		KubeCrName: proto.String(childID), ParentSessionId: proto.String(parentID)}
	desired := apply(child)

	const operatorKey = "vteam.ambient-code/parent-session-id"
	cr, err := dyn.Resource(AgenticSessionGVR).Namespace(ns).Get(ctx, desired.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(cr.GetAnnotations()[operatorKey])
	if got == "" {
		t.Fatalf("applied CR has no %s annotation (annotations %v): the operator sees no continuation", operatorKey, cr.GetAnnotations())
	}
	if got != parent.Name {
		t.Errorf("%s = %q, want the parent's CR name %q", operatorKey, got, parent.Name)
	}
	// The backend's lookup of the parent: by that name, in the child's namespace.
	p, err := dyn.Resource(AgenticSessionGVR).Namespace(ns).Get(ctx, got, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Get of the parent CR by the annotation's value %q: %v", got, err)
	}
	if p.GetAnnotations()[spec.AnnotationSessionID] != parentID {
		t.Errorf("CR %q maps back to session %q, want the parent %q", got, p.GetAnnotations()[spec.AnnotationSessionID], parentID)
	}

	child.ParentSessionId = proto.String("")
	apply(child)
	cr, err = dyn.Resource(AgenticSessionGVR).Namespace(ns).Get(ctx, desired.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := cr.GetAnnotations()[operatorKey]; ok {
		t.Errorf("%s = %q after parent_session_id was cleared, want it removed", operatorKey, v)
	}
}
