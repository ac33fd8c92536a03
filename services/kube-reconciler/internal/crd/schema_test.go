package crd_test

import (
	"encoding/json"
	"errors"
	"testing"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/crd"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
)

// operatorCRD returns the chart's CRD (the operator's schema), changed by mut.
func operatorCRD(tb testing.TB, mut func(spec, status *apiextensionsv1.JSONSchemaProps)) *apiextensionsv1.CustomResourceDefinition {
	tb.Helper()
	c, err := kubetest.LoadCRD()
	if err != nil {
		tb.Fatal(err)
	}
	if mut != nil {
		root := c.Spec.Versions[0].Schema.OpenAPIV3Schema
		sp, st := root.Properties["spec"], root.Properties["status"]
		mut(&sp, &st)
		root.Properties["spec"], root.Properties["status"] = sp, st
	}
	return c
}

// fullSession sets every session field the mapping reads.
func fullSession(id string) *ambientv1.Session {
	return &ambientv1.Session{
		Metadata: &ambientv1.ObjectReference{Id: id}, Name: "every field", ProjectId: proto.String("proj"),
		Prompt: proto.String("p"), Timeout: proto.Int32(600), LlmModel: proto.String("opus"), LlmTemperature: proto.Float64(0.2),
		LlmMaxTokens: proto.Int32(100), BotAccountName: proto.String("bot"), CreatedByUserId: proto.String("u-1"),
		Repos:                proto.String(`[{"url":"https://git/a","name":"a","autoPush":true},{"url":"https://git/b","branch":"dev","name":"b"}]`),
		ResourceOverrides:    proto.String(`{"cpu":"2"}`),
		EnvironmentVariables: proto.String(`{"A":"1"}`),
		Labels:               proto.String(`{"team":"x"}`), Annotations: proto.String(`{"note":"y"}`),
	}
}

func desiredObject(tb testing.TB, s *ambientv1.Session) *unstructured.Unstructured {
	tb.Helper()
	as, err := spec.Session(s, "ns")
	if err != nil {
		tb.Fatal(err)
	}
	u, err := apply.SessionObject(as)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// TestPrune: pruning to the installed CRD drops exactly the undeclared fields
// (indexes folded), keeps metadata, and keeps subtrees under
// x-kubernetes-preserve-unknown-fields.
func TestPrune(t *testing.T) {
	t.Parallel()
	// An object as the original binary sent it: the fields the operator's
	// CRD does not declare.
	legacy := func(tb testing.TB) *unstructured.Unstructured {
		tb.Helper()
		u := desiredObject(tb, fullSession("s1"))
		u.Object["spec"].(map[string]any)["project"] = "proj"
		u.Object["spec"].(map[string]any)["botAccount"] = map[string]any{"name": "bot"}
		for _, r := range u.Object["spec"].(map[string]any)["repos"].([]any) {
			r.(map[string]any)["name"] = "n"
		}
		return u
	}
	ours := func(tb testing.TB) *unstructured.Unstructured {
		tb.Helper()
		return desiredObject(tb, fullSession("s1"))
	}
	tests := []struct {
		name    string
		crd     *apiextensionsv1.CustomResourceDefinition
		obj     func(tb testing.TB) *unstructured.Unstructured
		dropped []string
	}{
		{name: "operator crd, our object", crd: operatorCRD(t, nil),
			obj: ours},
		{name: "operator crd, the original's fields", crd: operatorCRD(t, nil), obj: legacy,
			dropped: []string{"spec.botAccount", "spec.project", "spec.repos[].name"}},
		{name: "older crd without llmSettings and autoPush", crd: operatorCRD(t, func(sp, _ *apiextensionsv1.JSONSchemaProps) {
			delete(sp.Properties, "llmSettings")
			repos := sp.Properties["repos"]
			delete(repos.Items.Schema.Properties, "autoPush")
			sp.Properties["repos"] = repos
		}), obj: ours,
			dropped: []string{"spec.llmSettings", "spec.repos[].autoPush"}},
		{name: "spec preserves unknown fields", crd: operatorCRD(t, func(sp, _ *apiextensionsv1.JSONSchemaProps) {
			sp.XPreserveUnknownFields = ptr.To(true)
		}), obj: legacy, dropped: []string{"spec.repos[].name"}}, // declared subtrees are still pruned
		{name: "repo entries preserve unknown fields", crd: operatorCRD(t, func(sp, _ *apiextensionsv1.JSONSchemaProps) {
			repos := sp.Properties["repos"]
			repos.Items.Schema.XPreserveUnknownFields = ptr.To(true)
			sp.Properties["repos"] = repos
		}), obj: legacy, dropped: []string{"spec.botAccount", "spec.project"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := crd.FromCRD(tc.crd, spec.Version)
			if err != nil {
				t.Fatal(err)
			}
			u := tc.obj(t)
			before := u.DeepCopy()
			dropped := s.Prune(u.Object)
			if diff := cmp.Diff(tc.dropped, dropped); diff != "" {
				t.Errorf("dropped (-want +got):\n%s", diff)
			}
			for _, p := range tc.dropped {
				removeDotted(before.Object, p)
			}
			if diff := cmp.Diff(before.Object, u.Object); diff != "" {
				t.Errorf("pruned object (-want +got):\n%s", diff)
			}
		})
	}
}

// removeDotted deletes a folded path ("spec.repos[].name") from obj.
func removeDotted(obj map[string]any, path string) {
	var walk func(v any, parts []string)
	walk = func(v any, parts []string) {
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		key, isList := parts[0], false
		if k, ok := cutSuffix(key, "[]"); ok {
			key, isList = k, true
		}
		if len(parts) == 1 {
			delete(m, key)
			return
		}
		if !isList {
			walk(m[key], parts[1:])
			return
		}
		list, _ := m[key].([]any)
		for _, e := range list {
			walk(e, parts[1:])
		}
	}
	walk(obj, splitDots(path))
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}

func splitDots(p string) []string {
	var out []string
	start := 0
	for i := range len(p) {
		if p[i] == '.' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return append(out, p[start:])
}

// TestFromCRDRefuses: a CRD that does not serve v1alpha1, or serves it
// without a schema, is never used to prune.
func TestFromCRDRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		mut  func(c *apiextensionsv1.CustomResourceDefinition)
		want error
	}{
		{"other version only", func(c *apiextensionsv1.CustomResourceDefinition) { c.Spec.Versions[0].Name = "v1" }, crd.ErrVersionNotServed},
		{"not served", func(c *apiextensionsv1.CustomResourceDefinition) { c.Spec.Versions[0].Served = false }, crd.ErrVersionNotServed},
		{"no schema", func(c *apiextensionsv1.CustomResourceDefinition) { c.Spec.Versions[0].Schema = nil }, crd.ErrNoSchema},
		{"not structural", func(c *apiextensionsv1.CustomResourceDefinition) {
			root := c.Spec.Versions[0].Schema.OpenAPIV3Schema
			sp := root.Properties["spec"]
			sp.Properties["timeout"] = apiextensionsv1.JSONSchemaProps{} // no type
			root.Properties["spec"] = sp
		}, crd.ErrNoSchema},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := operatorCRD(t, nil)
			tc.mut(c)
			if _, err := crd.FromCRD(c, spec.Version); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzSessionFitsOperatorCRD: whatever the session holds, the desired
// AgenticSession declares only fields of the operator's CRD, so with that CRD
// installed pruning drops nothing and no data is lost silently.
func FuzzSessionFitsOperatorCRD(f *testing.F) {
	f.Add(`[{"url":"u","name":"n","autoPush":true}]`, `{"cpu":"1"}`, `{"A":"b"}`, "bot", "model", int32(5))
	f.Add(`[{"url":"u","branch":"b","extra":{"x":1}}]`, `{}`, `null`, "", "", int32(-5))
	s, err := crd.FromCRD(operatorCRD(f, nil), spec.Version)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, repos, overrides, env, bot, model string, timeout int32) {
		as, err := spec.Session(&ambientv1.Session{
			Metadata: &ambientv1.ObjectReference{Id: "s1"}, Name: "n", ProjectId: proto.String("p"), Prompt: proto.String("x"),
			Repos: proto.String(repos), ResourceOverrides: proto.String(overrides), EnvironmentVariables: proto.String(env),
			BotAccountName: proto.String(bot), LlmModel: proto.String(model), Timeout: proto.Int32(timeout), CreatedByUserId: proto.String("u"),
		}, "ns")
		if err != nil {
			return // refused input: TestSessionInvalid and FuzzSession cover it
		}
		u, err := apply.SessionObject(as)
		if err != nil {
			t.Fatal(err)
		}
		if dropped := s.Prune(u.Object); len(dropped) > 0 {
			b, _ := json.Marshal(u.Object["spec"])
			t.Fatalf("fields not in the operator's CRD: %v (spec %s)", dropped, b)
		}
	})
}

// BenchmarkPrune measures what pruning adds to each AgenticSession apply: one
// full session (every field) against the operator's CRD.
func BenchmarkPrune(b *testing.B) {
	s, err := crd.FromCRD(operatorCRD(b, nil), spec.Version)
	if err != nil {
		b.Fatal(err)
	}
	u := desiredObject(b, fullSession("s1"))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		obj := u.DeepCopy().Object
		b.StartTimer()
		if dropped := s.Prune(obj); len(dropped) > 0 {
			b.Fatal(dropped)
		}
	}
}
