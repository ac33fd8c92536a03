package runner

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

// envMap is BuildEnv's result as a map (one entry per name).
func envMap(t *testing.T, env []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("entry %q has no '='", kv)
		}
		if _, dup := out[k]; dup {
			t.Fatalf("%s twice in %q", k, env)
		}
		out[k] = v
	}
	return out
}

// TestBuildEnvOperatorVariables: what the platform's operator gives a
// runner pod and runner-manager knows from the session reaches the runner
// under the operator's names: PARENT_SESSION_ID (the CR annotation
// kube-reconciler sets to lower(parent_session_id); only for a session
// with a parent), USER_ID (the CR's spec.userContext.userId, from
// created_by_user_id, trimmed as the operator trims it; only when set) and
// AGENTIC_SESSION_NAMESPACE (the project, as PROJECT_NAME). Before, none
// of the three was passed.
func TestBuildEnvOperatorVariables(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		s    Session
		want map[string]string // "": not set
	}{
		{"continuation by a user", Session{ID: "child", ProjectID: "proj", ParentSessionID: "2Z9ParentID", UserID: " alice@example.com "},
			map[string]string{EnvParentSessionID: "2z9parentid", EnvUserID: "alice@example.com", EnvSessionNamespace: "proj"}},
		{"no parent, no user", Session{ID: "lone", ProjectID: "other"},
			map[string]string{EnvParentSessionID: "", EnvUserID: "", EnvSessionNamespace: "other"}},
		{"blank user", Session{ID: "s", ProjectID: "p", UserID: "  "},
			map[string]string{EnvUserID: "", EnvSessionNamespace: "p"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := envMap(t, BuildEnv(nil, EnvAllowList{}, tc.s, 9100, "/ws", "", ""))
			for k, want := range tc.want {
				if got, ok := env[k]; got != want || ok != (want != "") {
					t.Errorf("%s = %q (set %v), want %q", k, got, ok, want)
				}
			}
		})
	}
}

// TestBuildEnvSessionEnvironmentVariables: a session's
// environment_variables reach its runner last, as the operator applies
// spec.environmentVariables to the runner container (replace or append,
// after its own variables; Kubernetes ranks env over the envFrom secrets,
// the host's variables here): they replace session-derived variables and
// allowed host ones and add new ones, but never runner-manager's own
// (Reserved), which keep its value, or the host's when it sets none.
// Before, environment_variables were not passed at all.
func TestBuildEnvSessionEnvironmentVariables(t *testing.T) {
	t.Parallel()
	model := "server-model"
	base := Session{ID: "s1", ProjectID: "p1", ParentSessionID: "Parent", LLMModel: &model, Resume: true,
		Owner: "rm-0", ListenHost: ListenLoopback, PromptFile: "/ws/s1/.initial-prompt", BackendURL: "http://proxy/api", BotToken: "tok"}
	hostAllowed := NewEnvAllowList([]string{"BACKEND_API_URL"})
	for _, tc := range []struct {
		name  string
		s     func(Session) Session
		host  []string
		allow EnvAllowList
		env   map[string]string
		want  map[string]string // "": not set
	}{
		{"new names are added", nil, nil, EnvAllowList{}, map[string]string{"MY_FLAG": "on", "RUNNER_TYPE": "gemini-cli", "a.b-c": "x"},
			map[string]string{"MY_FLAG": "on", "RUNNER_TYPE": "gemini-cli", "a.b-c": "x", EnvLLMModel: model}},
		{"session-derived variables are replaced", nil, nil, EnvAllowList{},
			map[string]string{EnvLLMModel: "user-model", EnvResume: "false", EnvParentSessionID: "mine", EnvProjectName: "px"},
			map[string]string{EnvLLMModel: "user-model", EnvResume: "false", EnvParentSessionID: "mine", EnvProjectName: "px"}},
		{"allowed host variables are replaced", nil, []string{"ANTHROPIC_API_KEY=host-key", "PATH=/bin"}, EnvAllowList{},
			map[string]string{"ANTHROPIC_API_KEY": "session-key"},
			map[string]string{"ANTHROPIC_API_KEY": "session-key", "PATH": "/bin"}},
		{"runner-manager's own are kept", nil, nil, EnvAllowList{},
			map[string]string{EnvSessionID: "other", EnvAGUIPort: "1", EnvAGUIHost: "0.0.0.0", EnvWorkspace: "/ws/other", EnvPromptFile: "/etc/shadow",
				EnvOwner: "rm-9", EnvBackendURL: "http://evil.example", EnvBotToken: "x"},
			map[string]string{EnvSessionID: "s1", EnvAGUIPort: "9100", EnvAGUIHost: ListenLoopback, EnvWorkspace: "/ws/s1", EnvPromptFile: "/ws/s1/.initial-prompt",
				EnvOwner: "rm-0", EnvBackendURL: "http://proxy/api", EnvBotToken: "tok"}},
		// The repo baseline (reconcile/repos.go diffs a running session's
		// repos against the REPOS_JSON and AGENTIC_SESSION_NAME it passed):
		// before, a session variable replaced both.
		{"the repo baseline is kept", func(s Session) Session { r := `[{"url":"u/a"}]`; s.ReposJSON = &r; return s }, nil, EnvAllowList{},
			map[string]string{EnvReposJSON: `[{"url":"u/b"}]`, EnvSessionName: "other"},
			map[string]string{EnvReposJSON: `[{"url":"u/a"}]`, EnvSessionName: "s1"}},
		{"reserved and unset by runner-manager: the host's or none", func(s Session) Session { s.BackendURL, s.BotToken = "", ""; return s },
			[]string{"BACKEND_API_URL=http://host/api", "BOT_TOKEN=host"}, hostAllowed,
			map[string]string{EnvBackendURL: "http://evil.example", EnvBotToken: "x"},
			map[string]string{EnvBackendURL: "http://host/api", EnvBotToken: ""}},
		{"none", nil, nil, EnvAllowList{}, nil, map[string]string{EnvLLMModel: model, EnvResume: "true", EnvParentSessionID: "parent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := base
			if tc.s != nil {
				s = tc.s(s)
			}
			s.UserEnv = maps.Clone(tc.env)
			env := envMap(t, BuildEnv(tc.host, tc.allow, s, 9100, "/ws/s1", "", ""))
			for k, want := range tc.want {
				if got, ok := env[k]; got != want || ok != (want != "") {
					t.Errorf("%s = %q (set %v), want %q", k, got, ok, want)
				}
			}
		})
	}
}

// TestParseEnvironmentVariables: environment_variables are read as
// kube-reconciler reads them for spec.environmentVariables: one JSON object
// of strings with names Kubernetes accepts; nothing set is none; anything
// else is an ErrBadEnvironment naming the field, never a panic.
func TestParseEnvironmentVariables(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		name string
		raw  *string
		want map[string]string
	}{
		{"nil", nil, nil},
		{"empty", str(""), nil},
		{"blank", str(" \n"), nil},
		{"null", str("null"), nil},
		{"empty object", str("{}"), nil},
		{"object", str(` {"A":"1","my.var-x":"","_B":"a=b"} `), map[string]string{"A": "1", "my.var-x": "", "_B": "a=b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseEnvironmentVariables(tc.raw)
			if err != nil || !maps.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, raw, msg string }{
		{"not JSON", `A=1`, "not a JSON object of strings"},
		{"array", `["A"]`, "not a JSON object of strings"},
		{"number value", `{"A":1}`, "not a JSON object of strings"},
		{"null value", `{"A":null,"B":{}}`, "not a JSON object of strings"},
		{"trailing data", `{"A":"1"} {"B":"2"}`, "trailing data"},
		{"truncated", `{"A":"1"`, "not a JSON object of strings"},
		{"empty name", `{"":"x"}`, `name "": a valid environment variable name must consist of`},
		{"leading digit", `{"1A":"x"}`, `name "1A"`},
		{"equals sign", `{"A=B":"x"}`, `name "A=B"`},
		{"space", `{"A B":"x"}`, `name "A B"`},
		{"non-ASCII", `{"Ä":"x"}`, `name "Ä"`},
		{"dot-dot", `{"..x":"x"}`, `name "..x"`},
		{"NUL in a value", `{"A":"x\u0000y"}`, `value of "A" holds a NUL byte`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseEnvironmentVariables(&tc.raw)
			if !errors.Is(err, ErrBadEnvironment) || got != nil {
				t.Fatalf("got %v, %v; want ErrBadEnvironment", got, err)
			}
			if !strings.HasPrefix(err.Error(), "field environment_variables: ") || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q: want the field and %q", err, tc.msg)
			}
		})
	}
}

// FuzzParseEnvironmentVariables: any input is refused or gives variables a
// process environment can hold, each of them passed to the runner unless
// Reserved.
func FuzzParseEnvironmentVariables(f *testing.F) {
	for _, seed := range []string{`{"A":"1"}`, `{"1":"x"}`, `null`, `{"A":"\u0000"}`, `[]`, `{"SESSION_ID":"x"}`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		env, err := ParseEnvironmentVariables(&raw)
		if err != nil {
			if !errors.Is(err, ErrBadEnvironment) {
				t.Fatalf("error %v does not wrap ErrBadEnvironment", err)
			}
			return
		}
		got := envMap(t, BuildEnv(nil, EnvAllowList{}, Session{ID: "s1", UserEnv: env}, 9100, "/ws/s1", "", ""))
		for k, v := range env {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
				t.Fatalf("accepted %q=%q", k, v)
			}
			if !Reserved(k) && got[k] != v {
				t.Fatalf("%s = %q, want %q", k, got[k], v)
			}
		}
	})
}

// TestBuildEnvLLMSettingsAsTheOperator: the model settings a session sets
// reach the runner as the operator passes them, the temperature with two
// decimals (%.2f: 0.7 is "0.70", kube-reconciler's one-ulp-above 1 is
// "1.00"); settings the session leaves unset are not passed (the operator
// passes "", "0.00" and "0"; see BuildEnv for why not here). Before, the
// temperature went as Go's shortest form ("0.7", "1.0000000000000002").
func TestBuildEnvLLMSettingsAsTheOperator(t *testing.T) {
	t.Parallel()
	ptr := func(f float64) *float64 { return &f }
	model, tokens := "claude-sonnet-4-5", int32(4000)
	for _, tc := range []struct {
		name string
		s    Session
		want map[string]string // "": not set
	}{
		{"all set", Session{LLMModel: &model, LLMTemperature: ptr(0.7), LLMMaxTokens: &tokens},
			map[string]string{EnvLLMModel: model, EnvLLMTemp: "0.70", EnvLLMMaxTokens: "4000"}},
		{"whole number one ulp above", Session{LLMTemperature: ptr(1.0000000000000002)}, map[string]string{EnvLLMTemp: "1.00"}},
		{"zero", Session{LLMTemperature: ptr(0)}, map[string]string{EnvLLMTemp: "0.00"}},
		{"rounded to two decimals", Session{LLMTemperature: ptr(0.123)}, map[string]string{EnvLLMTemp: "0.12"}},
		{"unset", Session{}, map[string]string{EnvLLMModel: "", EnvLLMTemp: "", EnvLLMMaxTokens: ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.s.ID, tc.s.ProjectID = "s1", "p1"
			env := envMap(t, BuildEnv(nil, EnvAllowList{}, tc.s, 9100, "/ws/s1", "", ""))
			for k, want := range tc.want {
				got, set := env[k]
				if want == "" && set {
					t.Errorf("%s = %q, want it unset", k, got)
				}
				if want != "" && got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}
