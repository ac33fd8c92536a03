package runner

import (
	"fmt"
	"slices"

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
	var out []Repo
	for _, e := range entries {
		r := Repo{URL: e.URL, Branch: e.Branch, Name: e.Name}
		// The operator derives every name from the URL (the CRD has no
		// name); a local runner was given the session's own name in
		// REPOS_JSON and cloned the repo under it, so that one is kept.
		// session.Repos checked both.
		if r.Name == "" {
			r.Name = session.RepoName(r.URL)
		}
		if j := slices.IndexFunc(out, func(o Repo) bool { return o.URL == r.URL }); j >= 0 {
			out[j] = r
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// StartRepos returns the repos REPOS_JSON gives a runner of s at its start:
// SessionRepos of the repos field alone. REPOS_JSON does not carry
// repo_url, so a runner of a session with repo_url alone starts with none
// and is told of it by POST /repos/add once Running.
func StartRepos(s *ambientv1.Session) ([]Repo, error) {
	return SessionRepos(&ambientv1.Session{Metadata: s.GetMetadata(), KubeCrName: s.KubeCrName, Repos: s.Repos})
}

// reposError is what is wrong with a session's repos, worded for the
// session's condition; it is an ErrBadRepos (errors.Is).
type reposError struct{ msg string }

func (e *reposError) Error() string        { return e.msg }
func (e *reposError) Is(target error) bool { return target == ErrBadRepos }

func badRepos(format string, args ...any) error {
	return &reposError{msg: fmt.Sprintf(format, args...)}
}
