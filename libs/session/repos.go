package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// BranchPrefix is prepended to the session's AgenticSession name for a
// repo that names no branch: the operator's runner works on
// ambient/<AGENTIC_SESSION_NAME>.
const BranchPrefix = "ambient/"

// Repo is one repository of a session, as its runner is to have it: the
// AgenticSession CRD's spec.repos entry {url, branch, autoPush}, and the
// name the session gave it (the CRD declares none).
type Repo struct {
	URL      string `json:"url"`
	Branch   string `json:"branch,omitempty"`
	AutoPush *bool  `json:"autoPush,omitempty"`
	Name     string `json:"name,omitempty"`
}

// Repos returns the repositories of s, in its order: the repos field (a
// JSON list of {"url", "branch", "autoPush", "name"}, one JSON value and
// nothing after it), each entry without a branch on BranchPrefix+crName;
// when repos is empty or null, repo_url alone on that branch; none
// without either. kube-reconciler writes them as the AgenticSession's
// spec.repos and runner-manager tells a local runner of them, so both
// executors give a session the same repositories. An error says what is
// wrong, without the field's name (each caller names it its own way).
func Repos(s *ambientv1.Session, crName string) ([]Repo, error) {
	defaultBranch := BranchPrefix + crName
	raw := strings.TrimSpace(s.GetRepos())
	if raw == "" || raw == "null" {
		if s.GetRepoUrl() == "" {
			return nil, nil
		}
		return []Repo{{URL: s.GetRepoUrl(), Branch: defaultBranch}}, nil
	}
	var entries []Repo
	dec := json.NewDecoder(strings.NewReader(raw))
	err := dec.Decode(&entries)
	if err == nil {
		if _, tok := dec.Token(); !errors.Is(tok, io.EOF) {
			err = errors.New("trailing data after the JSON value")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("not a JSON list of {\"url\", \"branch\", \"autoPush\", \"name\"} objects: %w", err)
	}
	for i := range entries {
		if strings.TrimSpace(entries[i].URL) == "" {
			return nil, fmt.Errorf("entry %d has no url", i)
		}
		if entries[i].Branch == "" {
			entries[i].Branch = defaultBranch
		}
	}
	return entries, nil
}
