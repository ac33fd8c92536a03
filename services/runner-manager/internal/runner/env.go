package runner

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ambient-code/control-plane/libs/session"
)

// Host variables a runner inherits: these prefixes and exact names (the
// original local mode's allow-list). Everything else is dropped.
var (
	allowedPrefixes = []string{"ANTHROPIC_", "CLAUDE_", "GOOGLE_", "GITHUB_", "GITLAB_", "GIT_"}
	allowedNames    = []string{"HOME", "PATH", "USER", "SHELL", "LANG", "LC_ALL", "TMPDIR", "GOPATH", "GOROOT", "SSH_AUTH_SOCK"}
)

// Session variables set for every runner.
const (
	EnvSessionID    = "SESSION_ID"
	EnvAGUIPort     = "AGUI_PORT"
	EnvWorkspace    = "WORKSPACE_PATH"
	EnvBossURL      = "BOSS_URL"
	EnvBossSpace    = "BOSS_SPACE"
	EnvSessionName  = "AGENTIC_SESSION_NAME"
	EnvBossAgent    = "BOSS_AGENT_NAME"
	EnvPrompt       = "INITIAL_PROMPT"
	EnvPromptFile   = "INITIAL_PROMPT_FILE"
	EnvLLMModel     = "LLM_MODEL"
	EnvLLMTemp      = "LLM_TEMPERATURE"
	EnvLLMMaxTokens = "LLM_MAX_TOKENS"
	EnvTimeout      = "SESSION_TIMEOUT"
	EnvReposJSON    = "REPOS_JSON"
	EnvProjectName  = "PROJECT_NAME"
	// EnvOwner names the runner-manager replica (its member id) that
	// started the runner, so that its next incarnation finds what a crash
	// left running (EndOrphans). Runners may ignore it.
	EnvOwner = "RUNNER_MANAGER_MEMBER"
	// EnvAGUIHost is the address the runner listens on. The platform's
	// runner (ambient_runner's run_ambient_app) reads it and listens on
	// 0.0.0.0 without it: every interface of the host, where anyone on
	// the network could start runs past agui-proxy's authentication.
	EnvAGUIHost = "AGUI_HOST"
	// EnvBackendURL and EnvBotToken are where the platform's runner sends
	// its first prompt, and the bearer token it sends it with: it POSTs
	// INITIAL_PROMPT to <BACKEND_API_URL>/projects/<PROJECT_NAME>/
	// agentic-sessions/<SESSION_ID>/agui/run, and without the URL it logs
	// "Cannot auto-execute INITIAL_PROMPT" and the prompt is never run.
	EnvBackendURL = "BACKEND_API_URL"
	EnvBotToken   = "BOT_TOKEN"
	// EnvResume ("true") tells the platform's runner that its session ran
	// before, so it does not send INITIAL_PROMPT again.
	EnvResume = "IS_RESUME"
	// EnvParentSessionID names the session this one continues: the
	// platform's operator passes its CR's vteam.ambient-code/parent-session-id
	// annotation, which kube-reconciler sets to the parent's CR name,
	// lower(parent_session_id). An earlier version of the platform's
	// runner (claude-code-runner's main.py) took a set PARENT_SESSION_ID
	// for a continuation and did not auto-run INITIAL_PROMPT, continuing
	// the parent's conversation instead; today's ambient-runner does not
	// read it (IS_RESUME took that role), but it is part of what the
	// operator gives every continuation's runner, and tools the agent runs
	// may read it.
	EnvParentSessionID = "PARENT_SESSION_ID"
	// EnvSessionNamespace is the namespace of the session's AgenticSession
	// in the operator's pods: the project (kube-reconciler's namespace is
	// the project id, lower-cased), which the operator also passes as
	// PROJECT_NAME. The platform's runner reads it for the project of its
	// Langfuse traces and feedback, and for PROJECT_NAME when that is unset.
	EnvSessionNamespace = "AGENTIC_SESSION_NAMESPACE"
	// EnvUserID is the user the session runs for: the operator passes the
	// CR's spec.userContext.userId, which kube-reconciler sets from
	// created_by_user_id. The platform's runner makes it the user of its
	// Langfuse traces.
	EnvUserID = "USER_ID"
)

// reservedEnv are the variables a session's environment_variables cannot
// set: runner-manager's own. The platform's operator lets a session's
// variables replace any of its own, but in a pod they reach only that pod;
// here the runner is a process on a shared host, and these decide where it
// listens and is probed (AGUI_PORT, AGUI_HOST: another session's port, or
// every interface past agui-proxy's authentication), which session's
// answer its health check expects and which process group is the
// session's (SESSION_ID), which workspace it works in and whose orphan it
// is after a crash (WORKSPACE_PATH, RUNNER_MANAGER_MEMBER), the prompt
// file the manager wrote (INITIAL_PROMPT_FILE), and where the runner sends
// the one bot token every local runner shares (BACKEND_API_URL,
// BOT_TOKEN): the platform's runner POSTs its first prompt with BOT_TOKEN
// to BACKEND_API_URL without checking the host. REPOS_JSON and
// AGENTIC_SESSION_NAME are runner-manager's baseline of a running
// session's repos (package reconcile, repos.go): it takes what the runner
// has from the session's repos and CR name as it passed them
// (supervise.Runner.StartRepos), so a runner told other repos, or
// another default branch ambient/<AGENTIC_SESSION_NAME>, would be diffed
// against repos it does not have.
var reservedEnv = []string{EnvSessionID, EnvAGUIPort, EnvAGUIHost, EnvWorkspace, EnvPromptFile, EnvOwner, EnvBackendURL, EnvBotToken,
	EnvReposJSON, EnvSessionName}

// Reserved reports whether name is one of runner-manager's own variables,
// which a session's environment_variables cannot set.
func Reserved(name string) bool { return slices.Contains(reservedEnv, name) }

// ReservedIn returns the Reserved names among env's, sorted: the session
// variables BuildEnv ignores.
func ReservedIn(env map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if Reserved(k) {
			out = append(out, k)
		}
	}
	return out
}

// Session is what a runner is told about its session. Optional values are
// pointers: nil means the variable is not set.
type Session struct {
	ID string
	// Name is the session's display name (BOSS_AGENT_NAME is its slug).
	Name string
	// KubeCRName is the session's kube_cr_name: with ID it makes
	// AGENTIC_SESSION_NAME (see CRName).
	KubeCRName string
	// Resume says the session ran before (it has a start time): passed as
	// IS_RESUME=true.
	Resume    bool
	ProjectID string
	// ParentSessionID is the session's parent_session_id: passed
	// lower-cased as PARENT_SESSION_ID when not empty.
	ParentSessionID string
	// UserID is the session's created_by_user_id: passed trimmed as
	// USER_ID when not blank.
	UserID string
	// UserEnv is the session's environment_variables (see
	// ParseEnvironmentVariables): each replaces the variable of its name,
	// as the operator applies them, except the Reserved ones.
	UserEnv        map[string]string
	Prompt         *string
	LLMModel       *string
	LLMTemperature *float64
	LLMMaxTokens   *int32
	Timeout        *int32
	ReposJSON      *string
	// StartRepos are the repos ReposJSON names (see StartRepos): what
	// the runner has before anyone adds or removes one. Not passed on.
	StartRepos []Repo
	// PromptFile is the file holding the prompt (set by the Manager, which
	// writes it); BuildEnv passes it as INITIAL_PROMPT_FILE.
	PromptFile string
	// Owner is the member id of the replica starting the runner (set by
	// the Manager from Config.Member); BuildEnv passes it as
	// RUNNER_MANAGER_MEMBER.
	Owner string
	// ListenHost is the address the runner is told to listen on (set by
	// the Manager from Config.ListenHost); BuildEnv passes it as AGUI_HOST.
	ListenHost string
	// BackendURL and BotToken (set by the Manager from its Config) are
	// passed as BACKEND_API_URL and BOT_TOKEN when not empty.
	BackendURL string
	BotToken   string
}

// CRName is the name of the AgenticSession kube-reconciler gives a session
// (services/kube-reconciler/internal/spec CRName): kube_cr_name, else the
// session id, lower-cased. The platform's operator passes that name as
// AGENTIC_SESSION_NAME, and its runner makes it the branch
// ambient/<AGENTIC_SESSION_NAME> of repos that name none: the display name
// (free text, spaces and all) makes no valid branch. Unlike
// kube-reconciler this does not refuse a name that is no RFC 1123
// subdomain: a local runner has no resource to name.
func CRName(kubeCRName, id string) string {
	if kubeCRName != "" {
		return strings.ToLower(kubeCRName)
	}
	return strings.ToLower(id)
}

// Listen hosts of runners: see ListenHostFor.
const (
	ListenLoopback = "127.0.0.1"
	ListenAll      = "0.0.0.0"
	// ListenAllIPv6 is every interface, IPv6 and (on a dual-stack host)
	// IPv4: the runner is then reachable at an IPv6 address and at
	// 127.0.0.1.
	ListenAllIPv6 = "::"
)

// ListenHostFor is the address runners must listen on to be reachable at
// advertise (RUNNER_ADVERTISE_HOST, what agui-proxy dials) and at
// 127.0.0.1, where runner-manager probes their health and ports:
// loopback only when agui-proxy dials an IPv4 loopback address or
// localhost (the default), all interfaces otherwise (a pod IP); all IPv6
// interfaces when it dials an IPv6 address, ::1 included, since 0.0.0.0
// would serve IPv4 only and ::1 alone would fail the probe on 127.0.0.1.
// A runner reachable beyond what the proxy needs could be sent runs by
// anyone on the network, bypassing the proxy's authentication and
// authorization.
func ListenHostFor(advertise string) string {
	if advertise == "localhost" {
		return ListenLoopback
	}
	ip := net.ParseIP(advertise)
	switch {
	case ip == nil:
		return ListenAll
	case ip.To4() == nil:
		return ListenAllIPv6
	case ip.IsLoopback():
		return ListenLoopback
	}
	return ListenAll
}

// PromptEnvMax is the largest prompt also passed in INITIAL_PROMPT, for
// runners that read only the variable (the original's). The kernel
// refuses an environment entry over 128 KiB (MAX_ARG_STRLEN: execve fails
// with "argument list too long"), and argv and environment together share
// a quarter of the stack limit (2 MiB by default); 64 KiB leaves room for
// the rest. Larger prompts reach the runner only through
// INITIAL_PROMPT_FILE.
const PromptEnvMax = 64 << 10

// EnvAllowList decides which host variables a runner inherits: the
// original allow-list plus the operator's extra entries. The zero value is
// the original allow-list.
type EnvAllowList struct {
	names    []string
	prefixes []string
}

// NewEnvAllowList returns the original allow-list extended by extra: exact
// names, or prefixes written with a trailing "*" (e.g. "HTTPS_PROXY",
// "DEMO_*"). The entries are taken as given: RUNNER_ENV_ALLOW's are
// validated by package config (a bare "*" is refused there).
func NewEnvAllowList(extra []string) EnvAllowList {
	var a EnvAllowList
	for _, e := range extra {
		if p, ok := strings.CutSuffix(e, "*"); ok {
			a.prefixes = append(a.prefixes, p)
		} else {
			a.names = append(a.names, e)
		}
	}
	return a
}

// Allowed reports whether a host variable name is inherited by runners.
func (a EnvAllowList) Allowed(name string) bool {
	if slices.Contains(allowedNames, name) || slices.Contains(a.names, name) {
		return true
	}
	for _, prefixes := range [][]string{allowedPrefixes, a.prefixes} {
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				return true
			}
		}
	}
	return false
}

// BuildEnv returns the runner environment: the entries of host ("K=V" form)
// that allow lets through, then the session variables (which win over host
// values), then the session's own environment_variables (s.UserEnv), which
// win over both, as the platform's operator puts them last in the runner
// container and Kubernetes ranks a container's env over its envFrom
// secrets (the host's variables here); a Reserved name keeps
// runner-manager's value (or the host's, when runner-manager sets none).
// The result is sorted by name and has one entry per name.
func BuildEnv(host []string, allow EnvAllowList, s Session, port int, workspace, bossURL, bossSpace string) []string {
	vars := map[string]string{}
	for _, kv := range host {
		k, v, ok := strings.Cut(kv, "=")
		if ok && allow.Allowed(k) {
			vars[k] = v
		}
	}
	vars[EnvSessionID] = s.ID
	vars[EnvAGUIPort] = strconv.Itoa(port)
	vars[EnvWorkspace] = workspace
	vars[EnvSessionName] = CRName(s.KubeCRName, s.ID)
	vars[EnvBossAgent] = Slug(s.Name)
	vars[EnvProjectName] = s.ProjectID
	vars[EnvSessionNamespace] = s.ProjectID
	if s.ParentSessionID != "" {
		vars[EnvParentSessionID] = strings.ToLower(s.ParentSessionID)
	}
	if u := strings.TrimSpace(s.UserID); u != "" {
		vars[EnvUserID] = u
	}
	if bossURL != "" {
		vars[EnvBossURL] = bossURL
	}
	if bossSpace != "" {
		vars[EnvBossSpace] = bossSpace
	}
	if s.Prompt != nil && len(*s.Prompt) <= PromptEnvMax {
		vars[EnvPrompt] = *s.Prompt
	}
	if s.PromptFile != "" {
		vars[EnvPromptFile] = s.PromptFile
	}
	if s.Owner != "" {
		vars[EnvOwner] = s.Owner
	}
	if s.ListenHost != "" {
		vars[EnvAGUIHost] = s.ListenHost
	}
	if s.BackendURL != "" {
		vars[EnvBackendURL] = s.BackendURL
	}
	if s.BotToken != "" {
		vars[EnvBotToken] = s.BotToken
	}
	if s.Resume {
		vars[EnvResume] = "true"
	}
	if s.LLMModel != nil {
		vars[EnvLLMModel] = *s.LLMModel
	}
	// The three model settings are passed only when the session sets
	// them, unlike the operator, which always passes them ("", "0.00",
	// "0" when unset): the platform's runner reads only LLM_MODEL and
	// takes "" for its default, so leaving them out changes nothing for
	// it, while a runner that falls back to its own default when a
	// variable is unset (os.getenv("LLM_TEMPERATURE", "0.7")) would run a
	// session that set nothing at temperature 0 with no tokens.
	if s.LLMTemperature != nil {
		// Two decimals, as the operator formats it (%.2f): 0.7 is "0.70".
		vars[EnvLLMTemp] = strconv.FormatFloat(*s.LLMTemperature, 'f', 2, 64)
	}
	if s.LLMMaxTokens != nil {
		vars[EnvLLMMaxTokens] = strconv.Itoa(int(*s.LLMMaxTokens))
	}
	if s.Timeout != nil {
		vars[EnvTimeout] = strconv.Itoa(int(*s.Timeout))
	}
	if s.ReposJSON != nil {
		vars[EnvReposJSON] = *s.ReposJSON
	}
	for k, v := range s.UserEnv {
		if !Reserved(k) {
			vars[k] = v
		}
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// ParseEnvironmentVariables reads a session's environment_variables with
// session.EnvironmentVariables, the reader kube-reconciler maps the
// AgenticSession's spec.environmentVariables with, so a session runs with
// the same variables, or is refused for the same fault, in either
// deployment. Nil, blank, "null" and "{}" are none. Anything else (not one
// JSON object of strings, a name Kubernetes refuses for a variable, a
// value holding a NUL byte, which no process environment can) is an error
// wrapping [ErrBadEnvironment], whose message names the field and the
// fault as kube-reconciler's does.
func ParseEnvironmentVariables(raw *string) (map[string]string, error) {
	if raw == nil {
		return nil, nil
	}
	env, err := session.EnvironmentVariables(*raw)
	if err != nil {
		return nil, fmt.Errorf("field environment_variables: %w: %w", err, ErrBadEnvironment)
	}
	return env, nil
}

// Slug lower-cases s and turns every run of characters outside [a-z0-9]
// into one '-', trimmed at both ends and cut at 63 characters (a DNS label).
func Slug(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	out := strings.TrimSuffix(b.String(), "-")
	if len(out) > 63 {
		out = strings.TrimSuffix(out[:63], "-")
	}
	return out
}
