package spec

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"strings"

	sessionlib "github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// AgenticSession API coordinates.
const (
	Group    = "vteam.ambient-code"
	Version  = "v1alpha1"
	Kind     = "AgenticSession"
	Resource = "agenticsessions"
)

// maxPromptBytes keeps a session well under etcd's 1.5 MiB object limit, so an
// oversize prompt is reported on the session instead of failing every retry.
const maxPromptBytes = 512 << 10

// BranchPrefix is prepended to the CR name for repos without a branch.
const BranchPrefix = sessionlib.BranchPrefix

// AgenticSession is the desired AgenticSession of a session: only the fields
// the kube-reconciler owns (metadata it sets and the spec). Status belongs to
// the operator and is never part of it.
type AgenticSession struct {
	Name        string
	Namespace   string
	SessionID   string
	Labels      map[string]string
	Annotations map[string]string
	Spec        AgenticSessionSpec
}

// AgenticSessionSpec is the apply configuration of the CRD's spec: only fields
// the operator's CRD declares (see UPSTREAM-BEHAVIOUR.md, "The real
// AgenticSession CRD"). Unset fields are omitted (omitempty, pointers where
// zero is a real value), so under server-side apply the reconciler owns
// exactly the fields it sets and never claims a zero value. What the CRD
// cannot hold (project, bot account, resource overrides, repo names) goes to
// labels and annotations (LabelProjectID, AnnotationBotAccount,
// AnnotationResourceOverrides, AnnotationRepoNames) and, for the parent of a
// continuation, the operator's AnnotationParentSessionID.
type AgenticSessionSpec struct {
	DisplayName          string            `json:"displayName,omitempty"`
	InitialPrompt        string            `json:"initialPrompt,omitempty"`
	Timeout              *int32            `json:"timeout,omitempty"`
	Repos                []Repo            `json:"repos,omitempty"`
	LLMSettings          *LLMSettings      `json:"llmSettings,omitempty"`
	EnvironmentVariables map[string]string `json:"environmentVariables,omitempty"`
	UserContext          *UserContext      `json:"userContext,omitempty"`
}

// Repo is one repository of the session, as the CRD declares it.
type Repo struct {
	URL      string `json:"url"`
	Branch   string `json:"branch,omitempty"`
	AutoPush *bool  `json:"autoPush,omitempty"`
}

// LLMSettings is set when any of the session's llm_* fields is.
type LLMSettings struct {
	Model       string   `json:"model,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	MaxTokens   *int32   `json:"maxTokens,omitempty"`
}

// UserContext carries the user the session runs for.
type UserContext struct {
	UserID string `json:"userId"`
}

// CRName returns the AgenticSession name of s: kube_cr_name, else the session
// id, lower-cased; a *FieldError when that is not an RFC 1123 subdomain.
func CRName(s *ambientv1.Session) (string, error) {
	if s.GetKubeCrName() != "" {
		return resourceName(s.GetKubeCrName(), "kube_cr_name")
	}
	return resourceName(s.GetMetadata().GetId(), "id")
}

// parentCRName returns the AgenticSession name of the parent named by s's
// parent_session_id, "" when it has none; a *FieldError when that id can
// name no AgenticSession. The parent's CR is named by CRName, and the real
// API server sets kube_cr_name to the session id on create and never
// changes it (no create, update or status request carries it), so the
// parent's name is its id lower-cased: no lookup of the parent needed.
func parentCRName(s *ambientv1.Session) (string, error) {
	if s.GetParentSessionId() == "" {
		return "", nil
	}
	return resourceName(s.GetParentSessionId(), "parent_session_id")
}

// resourceName lower-cases src, the value of the session field fieldName,
// into an AgenticSession name.
func resourceName(src, fieldName string) (string, error) {
	name := strings.ToLower(src)
	if name == "" {
		return "", fieldErr(fieldName, "empty")
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", fieldErr(fieldName, "resource name %q: %s", clip(name), strings.Join(errs, "; "))
	}
	return name, nil
}

// Session returns the desired AgenticSession of s in namespace. Every malformed
// or invalid input gives a *FieldError naming the session field.
func Session(s *ambientv1.Session, namespace string) (*AgenticSession, error) {
	id := s.GetMetadata().GetId()
	if id == "" {
		return nil, fieldErr("id", "empty")
	}
	name, err := CRName(s)
	if err != nil {
		return nil, err
	}
	labels, err := userMap(s.GetLabels(), "labels", true)
	if err != nil {
		return nil, err
	}
	annotations, err := userMap(s.GetAnnotations(), "annotations", false)
	if err != nil {
		return nil, err
	}
	managed, err := ProjectLabels(s.GetProjectId(), "project_id")
	if err != nil {
		return nil, err
	}
	maps.Copy(labels, managed)

	sp, own, err := sessionSpec(s, name)
	if err != nil {
		return nil, err
	}
	own[AnnotationSessionID] = id
	if err := checkAnnotationSize(annotations, own); err != nil {
		return nil, err
	}
	maps.Copy(annotations, own)
	return &AgenticSession{Name: name, Namespace: namespace, SessionID: id, Labels: labels, Annotations: annotations, Spec: sp}, nil
}

// sessionSpec returns the spec of s and the control plane's annotations
// carrying what the CRD has no field for.
func sessionSpec(s *ambientv1.Session, crName string) (AgenticSessionSpec, map[string]string, error) {
	own := map[string]string{}
	if len(s.GetPrompt()) > maxPromptBytes {
		return AgenticSessionSpec{}, nil, fieldErr("prompt", "%d bytes, more than the %d allowed", len(s.GetPrompt()), maxPromptBytes)
	}
	sp := AgenticSessionSpec{
		DisplayName:   s.GetName(),
		InitialPrompt: s.GetPrompt(),
		Timeout:       s.Timeout,
	}
	repos, names, err := sessionRepos(s, crName)
	if err != nil {
		return sp, nil, err
	}
	sp.Repos = repos
	if names != "" {
		own[AnnotationRepoNames] = names
	}
	if t := s.LlmTemperature; t != nil && (math.IsNaN(*t) || math.IsInf(*t, 0)) {
		return sp, nil, fieldErr("llm_temperature", "%v is not a finite number", *t)
	}
	if s.LlmModel != nil || s.LlmTemperature != nil || s.LlmMaxTokens != nil {
		sp.LLMSettings = &LLMSettings{Model: s.GetLlmModel(), Temperature: operatorTemperature(s.LlmTemperature), MaxTokens: s.LlmMaxTokens}
	}
	if s.GetBotAccountName() != "" {
		own[AnnotationBotAccount] = s.GetBotAccountName()
	}
	overrides, err := jsonObject(s.GetResourceOverrides(), "resource_overrides")
	if err != nil {
		return sp, nil, err
	}
	if overrides != nil {
		own[AnnotationResourceOverrides] = string(overrides)
	}
	if sp.EnvironmentVariables, err = envVars(s.GetEnvironmentVariables()); err != nil {
		return sp, nil, err
	}
	if s.GetCreatedByUserId() != "" {
		sp.UserContext = &UserContext{UserID: s.GetCreatedByUserId()}
	}
	// Written whatever project the parent is in: the operator never reads
	// the parent's CR (it hands the name to the runner), and the backend
	// sets it even when its Get of the parent fails. An API lookup of the
	// parent's project would be needed to tell, for no difference in what
	// the operator does.
	parent, err := parentCRName(s)
	if err != nil {
		return sp, nil, err
	}
	if parent != "" {
		own[AnnotationParentSessionID] = parent
	}
	return sp, own, nil
}

// operatorTemperature returns t as the operator can read it. The operator
// reads spec.llmSettings.temperature with unstructured.NestedFloat64, which
// fails for a value that decodes as an integer, and then runs the session at
// temperature 0. A whole number (1, 2) is written as a JSON integer (Go and
// the kube-apiserver encode 1.0 as 1), so the operator's client decodes it
// as int64: a session asking for 1 would run at 0. The next float64 above it
// (1.0000000000000002) is stored with its fraction, decodes as float64, and
// reaches the runner as LLM_TEMPERATURE "1.00", the operator formatting it
// with two decimals. Zero is left alone: the operator's 0 for it is right.
// From 2^53 up every float64 is whole: there is nothing to move to.
func operatorTemperature(t *float64) *float64 {
	if t == nil || *t == 0 || *t != math.Trunc(*t) || math.Abs(*t) >= 1<<53 {
		return t
	}
	up := math.Nextafter(*t, math.Inf(1))
	return &up
}

// sessionRepos maps the session's repositories (sessionlib.Repos: the repos
// JSON, each entry without a branch on ambient/<cr-name>, else repo_url)
// to spec.repos. names is the JSON list of the entries' names, index for
// index ("" for an unnamed entry), or "" when no entry has a name.
func sessionRepos(s *ambientv1.Session, crName string) (repos []Repo, names string, err error) {
	entries, err := sessionlib.Repos(s, crName)
	if err != nil {
		return nil, "", fieldErr("repos", "%v", err)
	}
	named := false
	list := make([]string, len(entries))
	for i, e := range entries {
		repos = append(repos, Repo{URL: e.URL, Branch: e.Branch, AutoPush: e.AutoPush})
		list[i] = e.Name
		named = named || e.Name != ""
	}
	if !named {
		return repos, "", nil
	}
	b, err := json.Marshal(list)
	if err != nil {
		return nil, "", fieldErr("repos", "encode names: %v", err)
	}
	return repos, string(b), nil
}

// checkAnnotationSize refuses a session whose annotations, with the control
// plane's own added, exceed what Kubernetes stores (256 KiB in all). The
// error names the session field that contributes most, so the user knows
// what to shorten.
func checkAnnotationSize(user, own map[string]string) error {
	all := maps.Clone(user)
	maps.Copy(all, own)
	errs := apivalidation.ValidateAnnotations(all, field.NewPath("metadata", "annotations"))
	if len(errs) == 0 {
		return nil
	}
	sizes := map[string]int{"annotations": 0}
	for k, v := range user {
		sizes["annotations"] += len(k) + len(v)
	}
	sizes["resource_overrides"] = len(own[AnnotationResourceOverrides])
	sizes["repos"] = len(own[AnnotationRepoNames])
	sizes["bot_account_name"] = len(own[AnnotationBotAccount])
	sizes["parent_session_id"] = len(own[AnnotationParentSessionID])
	biggest := "annotations"
	for _, f := range []string{"resource_overrides", "repos", "bot_account_name", "parent_session_id"} {
		if sizes[f] > sizes[biggest] {
			biggest = f
		}
	}
	return fieldErr(biggest, "annotations of the AgenticSession too large: %s", clip(errs.ToAggregate().Error()))
}

// userMap parses a JSON object of strings given by the user for labels or
// annotations, validating keys and values as Kubernetes does. Keys under
// ambient-code.io/ are refused: they are the control plane's own.
func userMap(raw, fieldName string, isLabels bool) (map[string]string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" || raw == "null" {
		return map[string]string{}, nil
	}
	out, err := sessionlib.DecodeJSON[map[string]string](raw)
	if err != nil {
		return nil, fieldErr(fieldName, "not a JSON object of strings: %v", err)
	}
	if out == nil { // "null" spelled with white space inside a valid document
		out = map[string]string{}
	}
	for k := range out {
		if strings.HasPrefix(k, reservedPrefix) {
			return nil, fieldErr(fieldName, "key %q uses the reserved prefix %s", clip(k), reservedPrefix)
		}
	}
	var errs field.ErrorList
	if isLabels {
		errs = metav1validation.ValidateLabels(out, field.NewPath(fieldName))
	} else {
		errs = apivalidation.ValidateAnnotations(out, field.NewPath(fieldName))
	}
	if len(errs) > 0 {
		return nil, fieldErr(fieldName, "%s", clip(errs.ToAggregate().Error()))
	}
	return out, nil
}

// jsonObject checks raw is a JSON object and returns it compacted.
func jsonObject(raw, fieldName string) (json.RawMessage, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" || raw == "null" {
		return nil, nil
	}
	obj, err := sessionlib.DecodeJSON[map[string]json.RawMessage](raw)
	if err != nil {
		return nil, fieldErr(fieldName, "not a JSON object: %v", err)
	}
	if len(obj) == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(raw)); err != nil {
		return nil, fieldErr(fieldName, "not a JSON object: %v", err)
	}
	return buf.Bytes(), nil
}

// envVars reads environment_variables as runner-manager does
// (sessionlib.EnvironmentVariables): a JSON object of strings with names
// Kubernetes accepts (the same check as validation.IsEnvVarName, held to it
// by this package's tests) and no NUL byte in a value, which would make a
// pod that can never start.
func envVars(raw string) (map[string]string, error) {
	env, err := sessionlib.EnvironmentVariables(raw)
	if err != nil {
		return nil, fieldErr("environment_variables", "%v", err)
	}
	return env, nil
}
