package memapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// goldenPath is the REST script with the real server's answers, written
// from the facts (see its "about"); wirePath the measured wire facts that
// name every field of every message.
const (
	goldenPath = "testdata/rest_golden.json"
	wirePath   = "../../proto/ambient/v1/testdata/ambient-v1-wire.json"
)

type goldenStep struct {
	Name    string            `json:"name"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Body    json.RawMessage   `json:"body"`
	RawBody string            `json:"rawBody"`
	NoToken bool              `json:"noToken"`
	Status  int               `json:"status"`
	Save    map[string]string `json:"save"`
	Want    json.RawMessage   `json:"want"`
	Text    string            `json:"text"`
}

func loadGolden(t *testing.T) []goldenStep {
	t.Helper()
	b, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var doc struct {
		About []string     `json:"about"`
		Steps []goldenStep `json:"steps"`
	}
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decode %s: %v", goldenPath, err)
	}
	return doc.Steps
}

// wireFields returns, per message of the real ambient.v1, its field names.
func wireFields(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(wirePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for m, fields := range doc.Messages {
		for f := range fields {
			out[m] = append(out[m], f)
		}
	}
	return out
}

// TestRESTGolden runs the REST script of issue 11 (create, duplicate and
// invalid-name project, session with and without name, bad JSON, get and
// get unknown, PATCH, start, start again, stop, stop again, lists with
// page/size/search, settings, no token, delete twice) and compares each
// status code and JSON shape with the real server's, as written down in
// testdata/rest_golden.json.
func TestRESTGolden(t *testing.T) {
	t.Parallel()
	steps := loadGolden(t)
	fields := wireFields(t)
	srv := start(t)
	vars := map[string]string{}
	for i, st := range steps {
		ok := t.Run(fmt.Sprintf("%02d %s", i, st.Name), func(t *testing.T) {
			c := restClient{t: t, base: srv.RESTURL(), token: testToken}
			if st.NoToken {
				c.token = ""
			}
			body := st.RawBody
			if len(st.Body) > 0 {
				body = string(st.Body)
			}
			code, ctype, got := c.send(st.Method, expand(st.Path, vars), body)
			if code != st.Status {
				t.Fatalf("status %d, want %d (body %s)", code, st.Status, got)
			}
			switch {
			case st.Text != "":
				if !strings.HasPrefix(ctype, "text/plain") || strings.TrimSpace(string(got)) != st.Text {
					t.Fatalf("body %q (%s), want text %q", got, ctype, st.Text)
				}
				return
			case len(st.Want) == 0:
				if len(bytes.TrimSpace(got)) != 0 {
					t.Fatalf("body %s, want none", got)
				}
				return
			}
			if ctype != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ctype)
			}
			var gotDoc, wantDoc any
			if err := json.Unmarshal(got, &gotDoc); err != nil {
				t.Fatalf("answer %s is no JSON: %v", got, err)
			}
			if err := json.Unmarshal(st.Want, &wantDoc); err != nil {
				t.Fatalf("golden want: %v", err)
			}
			if obj, ok := gotDoc.(map[string]any); ok {
				for name, key := range st.Save {
					s, ok := obj[key].(string)
					if !ok {
						t.Fatalf("save %s: answer has no string %q", name, key)
					}
					vars[name] = s
				}
			}
			checkWireKeys(t, "$", wantDoc, fields)
			if diffs := matchShape("$", wantDoc, gotDoc, vars); len(diffs) > 0 {
				t.Fatalf("answer differs from the real server's:\n  %s\nanswer: %s", strings.Join(diffs, "\n  "), got)
			}
		})
		if !ok {
			break // later steps depend on this one
		}
	}
}

// checkWireKeys makes the golden itself answer to the wire facts: every
// key of an object of kind Session, Project or ProjectSettings is either a
// metadata key or a field of that message of the real ambient.v1.
func checkWireKeys(t *testing.T, at string, want any, fields map[string][]string) {
	t.Helper()
	switch w := want.(type) {
	case map[string]any:
		if kind, ok := w["kind"].(string); ok {
			if names, known := fields[kind]; known {
				for k := range w {
					if !slices.Contains([]string{"id", "kind", "href", "created_at", "updated_at"}, k) && !slices.Contains(names, k) {
						t.Errorf("golden %s: key %q is no field of the real %s", at, k, kind)
					}
				}
			}
		}
		for k, v := range w {
			checkWireKeys(t, at+"."+k, v, fields)
		}
	case []any:
		for i, v := range w {
			checkWireKeys(t, fmt.Sprintf("%s[%d]", at, i), v, fields)
		}
	}
}

// matchShape compares an answer with a golden value (see the golden's
// "about" for the rules) and lists every difference.
func matchShape(at string, want, got any, vars map[string]string) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: got %T, want an object", at, got)}
		}
		var d []string
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				d = append(d, fmt.Sprintf("%s.%s: missing", at, k))
				continue
			}
			d = append(d, matchShape(at+"."+k, wv, gv, vars)...)
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				d = append(d, fmt.Sprintf("%s.%s: not in the real server's answer (%v)", at, k, g[k]))
			}
		}
		slices.Sort(d)
		return d
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: got %v, want an array of %d", at, got, len(w))}
		}
		var d []string
		for i := range w {
			d = append(d, matchShape(fmt.Sprintf("%s[%d]", at, i), w[i], g[i], vars)...)
		}
		return d
	case string:
		return matchString(at, w, got, vars)
	case float64:
		if g, ok := got.(float64); !ok || math.Abs(g-w) > 1e-9 {
			return []string{fmt.Sprintf("%s: got %v, want %v", at, got, w)}
		}
	default:
		if got != want {
			return []string{fmt.Sprintf("%s: got %v, want %v", at, got, want)}
		}
	}
	return nil
}

func matchString(at, w string, got any, vars map[string]string) []string {
	switch w {
	case "<number>":
		if _, ok := got.(float64); !ok {
			return []string{fmt.Sprintf("%s: got %v, want a number", at, got)}
		}
		return nil
	}
	g, ok := got.(string)
	if !ok {
		return []string{fmt.Sprintf("%s: got %v (%T), want a string", at, got, got)}
	}
	switch {
	case w == "<string>":
		return nil
	case w == "<timestamp>":
		if _, err := time.Parse(time.RFC3339Nano, g); err != nil {
			return []string{fmt.Sprintf("%s: %q is no RFC 3339 timestamp", at, g)}
		}
		return nil
	case strings.HasSuffix(w, "<...>"):
		if p := expand(strings.TrimSuffix(w, "<...>"), vars); !strings.HasPrefix(g, p) {
			return []string{fmt.Sprintf("%s: got %q, want it to start with %q", at, g, p)}
		}
		return nil
	}
	if e := expand(w, vars); g != e {
		return []string{fmt.Sprintf("%s: got %q, want %q", at, g, e)}
	}
	return nil
}

// expand replaces {{name}} with saved values.
func expand(s string, vars map[string]string) string {
	for k, v := range vars {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	return s
}

// TestGoldenMatcherFails proves the matcher can fail: each wrong answer
// must be reported.
func TestGoldenMatcherFails(t *testing.T) {
	t.Parallel()
	want := map[string]any{"id": "{{s}}", "kind": "Session", "n": 0.7, "at": "<timestamp>", "r": "Invalid request format: <...>", "items": []any{}}
	good := map[string]any{"id": "X", "kind": "Session", "n": 0.7, "at": "2026-01-02T03:04:05Z", "r": "Invalid request format: oops", "items": []any{}}
	vars := map[string]string{"s": "X"}
	if d := matchShape("$", want, good, vars); len(d) != 0 {
		t.Fatalf("good answer reported: %v", d)
	}
	tests := []struct {
		name   string
		mutate func(map[string]any)
	}{
		{"extra key", func(m map[string]any) { m["metadata"] = map[string]any{} }},
		{"missing key", func(m map[string]any) { delete(m, "kind") }},
		{"wrong literal", func(m map[string]any) { m["kind"] = "Project" }},
		{"wrong variable", func(m map[string]any) { m["id"] = "Y" }},
		{"wrong number", func(m map[string]any) { m["n"] = 0.8 }},
		{"number as string", func(m map[string]any) { m["n"] = "0.7" }},
		{"bad timestamp", func(m map[string]any) { m["at"] = "yesterday" }},
		{"wrong prefix", func(m map[string]any) { m["r"] = "oops" }},
		{"longer array", func(m map[string]any) { m["items"] = []any{1.0} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := map[string]any{}
			for k, v := range good {
				bad[k] = v
			}
			tc.mutate(bad)
			if d := matchShape("$", want, bad, vars); len(d) == 0 {
				t.Fatalf("%v matched %v", bad, want)
			}
		})
	}
}

// send is do with the response Content-Type.
func (c restClient) send(method, path, body string) (int, string, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+"/api/ambient/v1"+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}
