package spec

import (
	"errors"
	"math"
	"strings"
	"testing"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
)

func session(id string, mut func(s *ambientv1.Session)) *ambientv1.Session {
	s := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: id}, Name: "My session", ProjectId: proto.String("proj")}
	if mut != nil {
		mut(s)
	}
	return s
}

func TestSessionMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       *ambientv1.Session
		wantName string
		want     AgenticSessionSpec
		labels   map[string]string
		annots   map[string]string // besides the session id
	}{
		{
			name:     "minimal",
			in:       session("S1", nil),
			wantName: "s1",
			want:     AgenticSessionSpec{DisplayName: "My session"},
		},
		{
			name: "all fields",
			in: session("S2", func(s *ambientv1.Session) {
				s.KubeCrName = proto.String("Custom-CR")
				s.Prompt = proto.String("do it")
				s.Timeout = proto.Int32(300)
				s.LlmModel = proto.String("sonnet")
				s.LlmTemperature = proto.Float64(0.7)
				s.LlmMaxTokens = proto.Int32(4000)
				s.BotAccountName = proto.String("bot")
				s.ResourceOverrides = proto.String(`{"cpu": "2", "memory": "4Gi"}`)
				s.EnvironmentVariables = proto.String(`{"FOO": "bar"}`)
				s.CreatedByUserId = proto.String("u1")
				s.Repos = proto.String(`[{"url": "https://g/a"}, {"url": "https://g/b", "branch": "main", "name": "b", "autoPush": true}]`)
				s.Labels = proto.String(`{"team": "x"}`)
				s.Annotations = proto.String(`{"note": "anything goes: {}"}`)
			}),
			wantName: "custom-cr",
			want: AgenticSessionSpec{
				DisplayName: "My session", InitialPrompt: "do it", Timeout: proto.Int32(300),
				Repos:                []Repo{{URL: "https://g/a", Branch: "ambient/custom-cr"}, {URL: "https://g/b", Branch: "main", AutoPush: proto.Bool(true)}},
				LLMSettings:          &LLMSettings{Model: "sonnet", Temperature: proto.Float64(0.7), MaxTokens: proto.Int32(4000)},
				EnvironmentVariables: map[string]string{"FOO": "bar"},
				UserContext:          &UserContext{UserID: "u1"},
			},
			labels: map[string]string{"team": "x"},
			annots: map[string]string{
				"note":                      "anything goes: {}",
				AnnotationBotAccount:        "bot",
				AnnotationResourceOverrides: `{"cpu":"2","memory":"4Gi"}`,
				AnnotationRepoNames:         `["","b"]`,
			},
		},
		{
			name:     "repo_url only",
			in:       session("s3", func(s *ambientv1.Session) { s.RepoUrl = proto.String("https://g/r") }),
			wantName: "s3",
			want:     AgenticSessionSpec{DisplayName: "My session", Repos: []Repo{{URL: "https://g/r", Branch: "ambient/s3"}}},
		},
		{
			name: "repos wins over repo_url",
			in: session("s4", func(s *ambientv1.Session) {
				s.RepoUrl = proto.String("https://g/r")
				s.Repos = proto.String(`[{"url":"https://g/x"}]`)
			}),
			wantName: "s4",
			want:     AgenticSessionSpec{DisplayName: "My session", Repos: []Repo{{URL: "https://g/x", Branch: "ambient/s4"}}},
		},
		{
			// An explicit empty list is a choice: no repos, repo_url or not.
			name: "empty repos list wins over repo_url",
			in: session("s4b", func(s *ambientv1.Session) {
				s.RepoUrl = proto.String("https://g/r")
				s.Repos = proto.String(`[]`)
			}),
			wantName: "s4b",
			want:     AgenticSessionSpec{DisplayName: "My session"},
		},
		{
			name:     "llm temperature alone",
			in:       session("s5", func(s *ambientv1.Session) { s.LlmTemperature = proto.Float64(0) }),
			wantName: "s5",
			want:     AgenticSessionSpec{DisplayName: "My session", LLMSettings: &LLMSettings{Temperature: proto.Float64(0)}},
		},
		{
			// The kube-apiserver stores a whole number as a JSON integer,
			// which the operator cannot read as a temperature (it would
			// run at 0); one ulp above reads as the same two decimals.
			name:     "whole llm temperature",
			in:       session("s5b", func(s *ambientv1.Session) { s.LlmTemperature = proto.Float64(1) }),
			wantName: "s5b",
			want:     AgenticSessionSpec{DisplayName: "My session", LLMSettings: &LLMSettings{Temperature: proto.Float64(math.Nextafter(1, 2))}},
		},
		{
			name: "empty json fields",
			in: session("s6", func(s *ambientv1.Session) {
				s.Repos = proto.String("null")
				s.Labels = proto.String("{}")
				s.EnvironmentVariables = proto.String(" ")
				s.ResourceOverrides = proto.String("{}")
			}),
			wantName: "s6",
			want:     AgenticSessionSpec{DisplayName: "My session"},
		},
		{
			// The operator's continuation annotation names the parent's
			// CR: its id lower-cased, as CRName names every session's CR.
			name:     "continuation",
			in:       session("s8", func(s *ambientv1.Session) { s.ParentSessionId = proto.String("2ZqParentKsuid") }),
			wantName: "s8",
			want:     AgenticSessionSpec{DisplayName: "My session"},
			annots:   map[string]string{AnnotationParentSessionID: "2zqparentksuid"},
		},
		{
			// parent_session_id is the field for it: a user annotation of
			// the operator's key does not override it.
			name: "continuation over a user annotation",
			in: session("s9", func(s *ambientv1.Session) {
				s.ParentSessionId = proto.String("p1")
				s.Annotations = proto.String(`{"vteam.ambient-code/parent-session-id": "other"}`)
			}),
			wantName: "s9",
			want:     AgenticSessionSpec{DisplayName: "My session"},
			annots:   map[string]string{AnnotationParentSessionID: "p1"},
		},
		{
			name:     "empty parent is no parent",
			in:       session("s10", func(s *ambientv1.Session) { s.ParentSessionId = proto.String("") }),
			wantName: "s10",
			want:     AgenticSessionSpec{DisplayName: "My session"},
		},
		{
			name:     "repos without names get no names annotation",
			in:       session("s7", func(s *ambientv1.Session) { s.Repos = proto.String(`[{"url":"u1"},{"url":"u2","name":""}]`) }),
			wantName: "s7",
			want:     AgenticSessionSpec{DisplayName: "My session", Repos: []Repo{{URL: "u1", Branch: "ambient/s7"}, {URL: "u2", Branch: "ambient/s7"}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Session(tc.in, "ns")
			if err != nil {
				t.Fatalf("Session: %v", err)
			}
			if got.Name != tc.wantName || got.Namespace != "ns" || got.SessionID != tc.in.GetMetadata().GetId() {
				t.Errorf("name/ns/id = %s/%s/%s, want %s/ns/%s", got.Name, got.Namespace, got.SessionID, tc.wantName, tc.in.GetMetadata().GetId())
			}
			if diff := cmp.Diff(tc.want, got.Spec); diff != "" {
				t.Errorf("spec (-want +got):\n%s", diff)
			}
			wantLabels := ManagedLabels("proj")
			for k, v := range tc.labels {
				wantLabels[k] = v
			}
			if diff := cmp.Diff(wantLabels, got.Labels); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			wantAnn := map[string]string{AnnotationSessionID: tc.in.GetMetadata().GetId()}
			for k, v := range tc.annots {
				wantAnn[k] = v
			}
			if diff := cmp.Diff(wantAnn, got.Annotations); diff != "" {
				t.Errorf("annotations (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSessionInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		mut   func(s *ambientv1.Session)
		field string
	}{
		{"repos not json", func(s *ambientv1.Session) { s.Repos = proto.String("[{") }, "repos"},
		{"repos object", func(s *ambientv1.Session) { s.Repos = proto.String(`{"url":"x"}`) }, "repos"},
		{"repos trailing", func(s *ambientv1.Session) { s.Repos = proto.String(`[] }`) }, "repos"},
		{"repos without url", func(s *ambientv1.Session) { s.Repos = proto.String(`[{"branch":"x"}]`) }, "repos"},
		// The operator clones a repo to repos/<name derived from its URL>,
		// the platform's runner removes it with rmtree: ".." is the
		// workspace.
		{"repo url ending in ..", func(s *ambientv1.Session) { s.Repos = proto.String(`[{"url":"https://h/o/.."}]`) }, "repos"},
		{"repo name outside the repos dir", func(s *ambientv1.Session) { s.Repos = proto.String(`[{"url":"u","name":"../x"}]`) }, "repos"},
		{"repo_url naming the workspace", func(s *ambientv1.Session) { s.RepoUrl = proto.String("https://h/o/..") }, "repos"},
		{"labels not json", func(s *ambientv1.Session) { s.Labels = proto.String(`nope`) }, "labels"},
		{"labels non string", func(s *ambientv1.Session) { s.Labels = proto.String(`{"a": 1}`) }, "labels"},
		{"labels bad value", func(s *ambientv1.Session) { s.Labels = proto.String(`{"a": "has space"}`) }, "labels"},
		{"labels bad key", func(s *ambientv1.Session) { s.Labels = proto.String(`{"a b": "x"}`) }, "labels"},
		{"labels reserved", func(s *ambientv1.Session) { s.Labels = proto.String(`{"ambient-code.io/managed": "false"}`) }, "labels"},
		{"annotations list", func(s *ambientv1.Session) { s.Annotations = proto.String(`["a"]`) }, "annotations"},
		{"annotations bad key", func(s *ambientv1.Session) { s.Annotations = proto.String(`{"/x": "y"}`) }, "annotations"},
		{"resource_overrides list", func(s *ambientv1.Session) { s.ResourceOverrides = proto.String(`[1]`) }, "resource_overrides"},
		{"resource_overrides broken", func(s *ambientv1.Session) { s.ResourceOverrides = proto.String(`{"cpu":`) }, "resource_overrides"},
		{"resource_overrides too large for an annotation", func(s *ambientv1.Session) {
			s.ResourceOverrides = proto.String(`{"x":"` + strings.Repeat("y", 300<<10) + `"}`)
		}, "resource_overrides"},
		{"repos autoPush not a bool", func(s *ambientv1.Session) { s.Repos = proto.String(`[{"url":"u","autoPush":"yes"}]`) }, "repos"},
		{"env not strings", func(s *ambientv1.Session) { s.EnvironmentVariables = proto.String(`{"A": {"b": 1}}`) }, "environment_variables"},
		{"env bad name", func(s *ambientv1.Session) { s.EnvironmentVariables = proto.String(`{"1=x": "y"}`) }, "environment_variables"},
		// No process environment holds a NUL: a pod with it never starts.
		{"env NUL in a value", func(s *ambientv1.Session) { s.EnvironmentVariables = proto.String(`{"A": "x\u0000y"}`) }, "environment_variables"},
		{"cr name invalid", func(s *ambientv1.Session) { s.KubeCrName = proto.String("a_b") }, "kube_cr_name"},
		{"parent id names no CR", func(s *ambientv1.Session) { s.ParentSessionId = proto.String("a_b") }, "parent_session_id"},
		{"id invalid", func(s *ambientv1.Session) { s.Metadata.Id = "x/../y" }, "id"},
		{"project id not label", func(s *ambientv1.Session) { s.ProjectId = proto.String("has space") }, "project_id"},
		{"temperature NaN", func(s *ambientv1.Session) { s.LlmTemperature = proto.Float64(math.NaN()) }, "llm_temperature"},
		{"prompt too large", func(s *ambientv1.Session) { s.Prompt = proto.String(strings.Repeat("x", maxPromptBytes+1)) }, "prompt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Session(session("s1", tc.mut), "ns")
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want a *FieldError", err)
			}
			if fe.Field != tc.field {
				t.Errorf("field = %q, want %q (%v)", fe.Field, tc.field, err)
			}
		})
	}
}

// TestParentAnnotationNamesParentCR: a continuation's annotation is the name
// of the CR its parent gets, for a parent as the real API server makes it
// (kube_cr_name set to the id on create), so the operator's runner is given
// the parent's AgenticSession name, as the platform's backend gives it.
func TestParentAnnotationNamesParentCR(t *testing.T) {
	t.Parallel()
	const parentID = "2zQ8kHa0RlM4pTn1cXvBwE7yUdF" // a 27-character KSUID, as rh-trex makes ids
	parent := session(parentID, func(s *ambientv1.Session) { s.KubeCrName = proto.String(parentID) })
	child := session("2zQ8kHa0RlM4pTn1cXvBwE7yUdG", func(s *ambientv1.Session) { s.ParentSessionId = proto.String(parentID) })
	p, err := Session(parent, "ns")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Session(child, "ns")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Annotations[AnnotationParentSessionID]; got != p.Name {
		t.Errorf("child's %s = %q, want the parent's CR name %q", AnnotationParentSessionID, got, p.Name)
	}
	if _, ok := p.Annotations[AnnotationParentSessionID]; ok {
		t.Errorf("a session without parent_session_id got %s = %q", AnnotationParentSessionID, p.Annotations[AnnotationParentSessionID])
	}
}

func TestNamespaceName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"Proj-A", "proj-a", true},
		{"p", "p", true},
		{"", "", false},
		{"has.dot", "", false},
		{strings.Repeat("a", 63), strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), "", false},
		{"-lead", "", false},
	}
	for _, tc := range tests {
		got, err := NamespaceName(tc.in, "name")
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("NamespaceName(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestRoleBindings(t *testing.T) {
	t.Parallel()
	allow := chartRoles
	tests := []struct {
		name     string
		access   string
		want     []RoleBinding
		rejected []string // roles refused
		wantErr  bool
	}{
		{name: "empty", access: ""},
		{name: "two entries sorted", access: `[{"group":"devs","role":"ambient-project-edit"},{"group":"admins","role":"ambient-project-admin"}]`,
			want: []RoleBinding{{"ambient-admins-ambient-project-admin", "admins", "ambient-project-admin"}, {"ambient-devs-ambient-project-edit", "devs", "ambient-project-edit"}}},
		{name: "duplicate bound once", access: `[{"group":"g","role":"ambient-project-view"},{"group":"g","role":"ambient-project-view"}]`,
			want: []RoleBinding{{"ambient-g-ambient-project-view", "g", "ambient-project-view"}}},
		{name: "cluster-admin refused", access: `[{"group":"g","role":"cluster-admin"},{"group":"g","role":"ambient-project-view"}]`,
			want: []RoleBinding{{"ambient-g-ambient-project-view", "g", "ambient-project-view"}}, rejected: []string{"cluster-admin"}},
		{name: "invalid name reported", access: `[{"group":"a/b","role":"ambient-project-view"},{"group":"50%","role":"ambient-project-edit"}]`,
			rejected: []string{"ambient-project-view", "ambient-project-edit"}},
		{name: "upper case and colon bound", access: `[{"group":"MyTeam","role":"ambient-project-edit"},{"group":"system:authenticated","role":"ambient-project-view"}]`,
			want: []RoleBinding{{"ambient-MyTeam-ambient-project-edit", "MyTeam", "ambient-project-edit"},
				{"ambient-system:authenticated-ambient-project-view", "system:authenticated", "ambient-project-view"}}},
		{name: "empty group", access: `[{"role":"ambient-project-view"}]`, rejected: []string{"ambient-project-view"}},
		{name: "malformed", access: `[{"group":`, wantErr: true},
		{name: "not a list", access: `{"group":"g"}`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ps := &ambientv1.ProjectSettings{ProjectId: "p", GroupAccess: proto.String(tc.access)}
			got, rej, err := RoleBindings(ps, allow)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("bindings (-want +got):\n%s", diff)
			}
			var gotRej []string
			for _, r := range rej {
				gotRej = append(gotRej, r.Role)
				if r.Reason == "" {
					t.Errorf("rejection without reason: %+v", r)
				}
			}
			if diff := cmp.Diff(tc.rejected, gotRej); diff != "" {
				t.Errorf("rejected (-want +got):\n%s", diff)
			}
		})
	}
}

// chartRoles are the chart's project roles (config.DefaultRoleAllowList).
var chartRoles = []string{"ambient-project-admin", "ambient-project-edit", "ambient-project-view"}
