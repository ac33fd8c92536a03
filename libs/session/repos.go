package session

import (
	"fmt"
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

// Repos returns the repositories of s, in its order: the repos field (one
// JSON list of {"url", "branch", "autoPush", "name"}: see DecodeJSON),
// each entry without a branch on BranchPrefix+crName; when repos is empty
// or null, repo_url alone on that branch; none without either.
// kube-reconciler writes them as the AgenticSession's spec.repos and
// runner-manager tells a local runner of them, so both executors give a
// session the same repositories. A repo whose directory on the runner
// would not be one inside its repos directory (the name the session gives
// it, or the one derived from its URL: see repoNameFault) is refused. An
// error says what is wrong, without the field's name (each caller names it
// its own way).
func Repos(s *ambientv1.Session, crName string) ([]Repo, error) {
	defaultBranch := BranchPrefix + crName
	raw := strings.TrimSpace(s.GetRepos())
	if raw == "" || raw == "null" {
		if s.GetRepoUrl() == "" {
			return nil, nil
		}
		name := RepoName(s.GetRepoUrl())
		if why := repoNameFault(name); why != "" {
			return nil, fmt.Errorf("repo_url %q: name %q %s", clip(s.GetRepoUrl()), clip(name), why)
		}
		return []Repo{{URL: s.GetRepoUrl(), Branch: defaultBranch}}, nil
	}
	entries, err := DecodeJSON[[]Repo](raw)
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
		names := []string{RepoName(entries[i].URL)}
		if entries[i].Name != "" {
			names = append(names, entries[i].Name)
		}
		for _, name := range names {
			if why := repoNameFault(name); why != "" {
				return nil, fmt.Errorf("entry %d (url %q): name %q %s", i, clip(entries[i].URL), clip(name), why)
			}
		}
	}
	return entries, nil
}

// RepoName is the directory the platform's runner clones a repo of this
// URL to, under its repos directory, when the session names none (the
// operator's deriveRepoNameFromURL): its last path element without ".git".
func RepoName(url string) string {
	parts := strings.Split(strings.TrimRight(strings.TrimSuffix(url, ".git"), "/"), "/")
	return parts[len(parts)-1]
}

// repoNameFault says why name cannot name a repo's directory, "" when it
// can. The platform's runner clones a repo to <workspace>/repos/<name> and
// removes one with shutil.rmtree of that path (ambient-runner's
// endpoints/repos.py), with no check of its own: "" and "." are the repos
// directory itself, ".." the workspace, a "/" a path below another repo
// or, leading, an absolute path (Python's Path joins it in place of the
// directory). A backslash is a separator on Windows, and a NUL no path can
// hold; both are refused so a name means the same on any runner. Repos
// checks the name the session gives and the one the operator derives
// from the URL (it ignores the session's): a repo must be safe under
// either executor.
func repoNameFault(name string) string {
	switch {
	case name == "":
		return "is empty"
	case name == "." || name == "..":
		return "is not a directory name"
	case strings.ContainsAny(name, "/\\\x00"):
		return `holds a "/", "\\" or NUL`
	}
	return ""
}
