package session_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

func TestRepos(t *testing.T) {
	t.Parallel()
	yes := true
	cases := []struct {
		name    string
		s       *ambientv1.Session
		want    []session.Repo
		wantErr string
	}{
		{name: "none", s: &ambientv1.Session{}},
		{name: "null", s: &ambientv1.Session{Repos: proto.String(" null ")}},
		{name: "repo_url alone", s: &ambientv1.Session{RepoUrl: proto.String("https://h/o/r.git")},
			want: []session.Repo{{URL: "https://h/o/r.git", Branch: "ambient/cr"}}},
		{name: "repos win over repo_url", s: &ambientv1.Session{RepoUrl: proto.String("https://h/o/x"),
			Repos: proto.String(`[{"url":"https://h/o/a","branch":"main","autoPush":true,"name":"a1"},{"url":"https://h/o/b"}]`)},
			want: []session.Repo{{URL: "https://h/o/a", Branch: "main", AutoPush: &yes, Name: "a1"}, {URL: "https://h/o/b", Branch: "ambient/cr"}}},
		{name: "empty list", s: &ambientv1.Session{Repos: proto.String(`[]`)}, want: []session.Repo{}},
		{name: "not json", s: &ambientv1.Session{Repos: proto.String(`not json`)}, wantErr: "not a JSON list"},
		{name: "an object", s: &ambientv1.Session{Repos: proto.String(`{"url":"u"}`)}, wantErr: "not a JSON list"},
		{name: "trailing data", s: &ambientv1.Session{Repos: proto.String(`[] []`)}, wantErr: "trailing data"},
		{name: "no url", s: &ambientv1.Session{Repos: proto.String(`[{"url":"u"},{"branch":"b"}]`)}, wantErr: "entry 1 has no url"},
		{name: "blank url", s: &ambientv1.Session{Repos: proto.String(`[{"url":"  "}]`)}, wantErr: "entry 0 has no url"},
		{name: "name outside the repos dir", s: &ambientv1.Session{Repos: proto.String(`[{"url":"https://h/o/a","name":"../b"}]`)},
			wantErr: `entry 0 (url "https://h/o/a"): name "../b" holds a "/"`},
		{name: "name of the workspace", s: &ambientv1.Session{Repos: proto.String(`[{"url":"https://h/o/a","name":".."}]`)},
			wantErr: `name ".." is not a directory name`},
		{name: "url naming the workspace", s: &ambientv1.Session{Repos: proto.String(`[{"url":"https://h/o/..","name":"fine"}]`)},
			wantErr: `entry 0 (url "https://h/o/.."): name ".." is not a directory name`},
		{name: "url naming nothing", s: &ambientv1.Session{Repos: proto.String(`[{"url":".git"}]`)}, wantErr: `name "" is empty`},
		{name: "repo_url naming the workspace", s: &ambientv1.Session{RepoUrl: proto.String("https://h/o/..")},
			wantErr: `repo_url "https://h/o/..": name ".." is not a directory name`},
		{name: "backslash", s: &ambientv1.Session{Repos: proto.String(`[{"url":"https://h/o/a","name":"a\\b"}]`)}, wantErr: `holds a`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := session.Repos(tc.s, "cr")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Repos = %+v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("Repos = %+v, want %+v", got, tc.want)
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.URL != w.URL || g.Branch != w.Branch || g.Name != w.Name || (g.AutoPush == nil) != (w.AutoPush == nil) ||
					(g.AutoPush != nil && *g.AutoPush != *w.AutoPush) {
					t.Fatalf("entry %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// FuzzRepos: any repos and repo_url give either repos, each with a URL
// that is not blank, a branch, and names (given and derived) that stay
// inside the runner's repos directory, or an error; never a panic.
func FuzzRepos(f *testing.F) {
	for _, seed := range []string{"", "null", "[]", `[{"url":"u"}]`, `[{"url":"u","branch":"b","autoPush":false,"name":"n"}]`, `[{}]`, `{"url":1}`, `[1]`, `[{"url":"u"}] x`} {
		f.Add(seed, "https://h/o/r")
	}
	f.Fuzz(func(t *testing.T, repos, repoURL string) {
		s := &ambientv1.Session{Repos: proto.String(repos), RepoUrl: proto.String(repoURL)}
		got, err := session.Repos(s, "cr")
		if err != nil {
			return
		}
		for i, r := range got {
			if r.Branch == "" {
				t.Fatalf("entry %d of %q has no branch: %+v", i, repos, r)
			}
			if strings.TrimSpace(r.URL) == "" && r.URL != repoURL {
				t.Fatalf("entry %d of %q has no url: %+v", i, repos, r)
			}
			for _, name := range []string{r.Name, session.RepoName(r.URL)} {
				if name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") || (name == "" && name == session.RepoName(r.URL)) {
					t.Fatalf("entry %d of %q names a directory outside the repos dir: %q", i, repos, name)
				}
			}
		}
	})
}
