package demorunner

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRepoEndpoints: POST /repos/add and /repos/remove take the platform
// runner's bodies, are listed by GET /repos/status and counted in
// /debug/stats, and answer 500 while the workspace holds ReposFailFile.
func TestRepoEndpoints(t *testing.T) {
	t.Parallel()
	ws := t.TempDir()
	s, url := startServer(t, Config{SessionID: "s1", Workspace: ws})
	post := func(path, body string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	repos := func() []Repo {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/repos/status", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var st struct{ Repos []Repo }
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st.Repos
	}
	if c := post("/repos/add", `{"url":"https://g/o/a.git","branch":"main"}`); c != 200 {
		t.Fatalf("add = %d", c)
	}
	if c := post("/repos/add", `{"url":"https://g/o/b","branch":"dev","name":"bee"}`); c != 200 {
		t.Fatalf("add = %d", c)
	}
	if c := post("/repos/add", `{"branch":"dev"}`); c != 400 {
		t.Fatalf("add without url = %d, want 400", c)
	}
	if got := repos(); len(got) != 2 || got[0] != (Repo{URL: "https://g/o/a.git", Name: "a", Branch: "main"}) || got[1].Name != "bee" {
		t.Fatalf("repos = %+v", got)
	}
	if c := post("/repos/remove", `{"name":"a"}`); c != 200 {
		t.Fatalf("remove = %d", c)
	}
	if err := os.WriteFile(filepath.Join(ws, ReposFailFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if c := post("/repos/add", `{"url":"https://g/o/c"}`); c != 500 {
		t.Fatalf("add with %s = %d, want 500", ReposFailFile, c)
	}
	if c := post("/repos/remove", `{"name":"bee"}`); c != 500 {
		t.Fatalf("remove with %s = %d, want 500", ReposFailFile, c)
	}
	if got := repos(); len(got) != 1 || got[0].Name != "bee" {
		t.Fatalf("repos = %+v, want bee alone", got)
	}
	if st := s.StatsSnapshot(); st.ReposAdded != 2 || st.ReposRemoved != 1 {
		t.Fatalf("stats = %+v, want 2 adds and 1 removal", st)
	}
}
