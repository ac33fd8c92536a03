package spec

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzSession feeds arbitrary JSON-in-string fields and names to the spec
// builder. Properties: no panic; an error is always a *FieldError; a success
// has a valid name, a spec that marshals to JSON, every repo has a url and a
// branch, and what the CRD cannot hold round-trips through the annotations:
// the bot account exactly, resource_overrides as the same JSON value, repo
// names index for index with spec.repos.
func FuzzSession(f *testing.F) {
	f.Add("s1", "", `[{"url":"u"}]`, `{"a":"b"}`, `{"n":"v"}`, `{"cpu":"1"}`, `{"A":"b"}`, "bot")
	f.Add("S-2", "cr", `[{"url":"u","branch":"b","name":"n","autoPush":true}]`, `{}`, `null`, `{}`, `{}`, "")
	f.Add("x", "", `[{`, `{"a":1}`, `[]`, `[1]`, `{"1":"x"}`, "")
	f.Add("../x", "a_b", `{"url":"x"}`, `{"ambient-code.io/x":"y"}`, `{"/":""}`, `"s"`, `null`, "b")
	f.Fuzz(func(t *testing.T, id, crName, repos, labels, annotations, overrides, env, bot string) {
		s := &ambientv1.Session{
			Metadata: &ambientv1.ObjectReference{Id: id}, Name: "n", ProjectId: proto.String("p"),
			Repos: proto.String(repos), Labels: proto.String(labels), Annotations: proto.String(annotations),
			ResourceOverrides: proto.String(overrides), EnvironmentVariables: proto.String(env), BotAccountName: proto.String(bot),
		}
		if crName != "" {
			s.KubeCrName = proto.String(crName)
		}
		got, err := Session(s, "ns")
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("error %v is not a *FieldError with a field", err)
			}
			return
		}
		if errs := validation.IsDNS1123Subdomain(got.Name); len(errs) > 0 {
			t.Fatalf("invalid name %q: %v", got.Name, errs)
		}
		if _, err := json.Marshal(got.Spec); err != nil {
			t.Fatalf("spec does not marshal: %v", err)
		}
		for _, r := range got.Spec.Repos {
			if r.URL == "" || r.Branch == "" {
				t.Fatalf("repo without url or branch: %+v", r)
			}
		}
		if got.Annotations[AnnotationSessionID] != id {
			t.Fatalf("session id annotation = %q, want %q", got.Annotations[AnnotationSessionID], id)
		}
		if got.Annotations[AnnotationBotAccount] != bot {
			t.Fatalf("bot account annotation = %q, want %q", got.Annotations[AnnotationBotAccount], bot)
		}
		if o, ok := got.Annotations[AnnotationResourceOverrides]; ok && !sameJSON(t, o, overrides) {
			t.Fatalf("resource overrides annotation %s is not %s", o, overrides)
		}
		if n, ok := got.Annotations[AnnotationRepoNames]; ok {
			var names []string
			if err := json.Unmarshal([]byte(n), &names); err != nil || len(names) != len(got.Spec.Repos) {
				t.Fatalf("repo names annotation %s for %d repos: %v", n, len(got.Spec.Repos), err)
			}
		}
	})
}

// FuzzRoleBindings: no panic, bound names are valid and bound roles allowed.
func FuzzRoleBindings(f *testing.F) {
	f.Add(`[{"group":"g","role":"ambient-project-view"}]`)
	f.Add(`[{"group":"g","role":"cluster-admin"}]`)
	f.Add(`[{`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, access string) {
		got, _, err := RoleBindings(&ambientv1.ProjectSettings{GroupAccess: proto.String(access)}, chartRoles)
		if err != nil {
			return
		}
		for _, b := range got {
			if errs := content.IsPathSegmentName(b.Name); len(errs) > 0 {
				t.Fatalf("invalid name %q", b.Name)
			}
			if b.Role != "ambient-project-admin" && b.Role != "ambient-project-edit" && b.Role != "ambient-project-view" {
				t.Fatalf("bound role %q off the allow-list", b.Role)
			}
		}
	})
}

func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("%q: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}
