package runner

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Repo is one repository of a session as its runner is told of it, in
// REPOS_JSON at its start and by POST /repos/add afterwards.
type Repo struct {
	URL    string
	Branch string
	Name   string
}

// SessionRepos returns the repos of s as its runner is told of them:
// session.Repos, the function kube-reconciler maps the AgenticSession's
// spec.repos with (the repos JSON, each entry without a branch getting
// ambient/<cr-name>; else repo_url on that branch), one entry per URL as
// the operator keeps (the last one wins: a runner has one clone per URL),
// in the order of first appearance. An error names what is wrong.
func SessionRepos(s *ambientv1.Session) ([]Repo, error) {
	entries, err := session.Repos(s, CRName(s.GetKubeCrName(), s.GetMetadata().GetId()))
	if err != nil {
		return nil, badRepos("repos: %v", err)
	}
	raw := strings.TrimSpace(s.GetRepos())
	onlyURL := raw == "" || raw == "null"
	var out []Repo
	for i, e := range entries {
		r := Repo{URL: e.URL, Branch: e.Branch, Name: e.Name}
		// The operator derives every name from the URL (the CRD has no
		// name); a local runner was given the session's own name in
		// REPOS_JSON and cloned the repo under it, so that one is kept.
		if r.Name == "" {
			r.Name = repoName(r.URL)
		}
		if why := repoNameFault(r.Name); why != "" {
			if onlyURL {
				return nil, badRepos("repo_url %q: name %q %s", clip(r.URL), clip(r.Name), why)
			}
			return nil, badRepos("repos: entry %d (url %q): name %q %s", i, clip(r.URL), clip(r.Name), why)
		}
		if j := slices.IndexFunc(out, func(o Repo) bool { return o.URL == r.URL }); j >= 0 {
			out[j] = r
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// reposError is what is wrong with a session's repos, worded for the
// session's condition; it is an ErrBadRepos (errors.Is).
type reposError struct{ msg string }

func (e *reposError) Error() string        { return e.msg }
func (e *reposError) Is(target error) bool { return target == ErrBadRepos }

func badRepos(format string, args ...any) error {
	return &reposError{msg: fmt.Sprintf(format, args...)}
}

// repoName is the directory name the operator and the platform's runner
// derive from a repo URL: its last path element without ".git".
func repoName(url string) string {
	parts := strings.Split(strings.TrimRight(strings.TrimSuffix(url, ".git"), "/"), "/")
	return parts[len(parts)-1]
}

// repoNameFault says why name cannot name a repo on the runner, "" when it
// can. The platform's runner clones a repo to <workspace>/repos/<name> and
// removes one with shutil.rmtree of that path (ambient-runner's
// endpoints/repos.py), with no check of its own: "" and "." are the repos
// directory itself, ".." the workspace, a "/" a path below another repo
// or, leading, an absolute path (Python's Path joins it in place of the
// directory). A backslash is a separator on Windows, and a NUL no path can
// hold; both are refused so a name means the same on any runner.
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
