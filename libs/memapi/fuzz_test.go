package memapi

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// FuzzReadObject feeds REST request bodies to readObject (creates) and
// readPatch (updates and status writes). Properties: no panic; a failure is the real
// server's 400 id 17, or for a create with an id its 400 id 8 "id must be
// empty"; a decoded request re-encodes and decodes to an equal message.
func FuzzReadObject(f *testing.F) {
	for _, seed := range []string{
		`{"name":"demo","prompt":"hello","project_id":"p"}`,
		`{"name":"x","llm_temperature":0.5,"llm_max_tokens":12,"timeout":3}`,
		`{"name":"x","phase":"Running","start_time":"2026-01-02T03:04:05.123456789Z","sdk_restart_count":2}`,
		`{"name":"x","id":"i","kind":"Session","href":"h","created_at":"2026-01-02T03:04:05Z"}`,
		`{"labels":"{\"a\":\"b\"}","repos":"[{\"url\":\"u\"}]","name":"r"}`,
		`{"name":"\u0000\ud800"}`, `{"name":null}`, `{"metadata":{}}`,
		`{}`, ``, `null`, `[]`, `{"name":`, `{"color":"red"}`, `{"name":"a","projectId":"p"}`,
		`{"name":"a","PROMPT":"hi","Phase":"Running"}`, "{\"name\":\"\xff\xfe\",\"N\xc3AME\":1}",
		`{"name":"a","name":null,"NAME":"b"}`, `{"name":"a","created_at":"2020-01-02T03:04:05.1234567891+02:00"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(err error, m proto.Message, create bool) {
			if err != nil {
				var ae *APIError
				idSet := create && errors.As(err, &ae) && ae.ID == restapi.ErrorIDValidation && ae.Reason == "id must be empty"
				if !idSet && (!errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.ID != restapi.ErrorIDMalformedRequest ||
					!strings.HasPrefix(ae.Reason, "Invalid request format: ")) {
					t.Fatalf("error %#v, want 400 id 17 (or id 8 for an id in a create)", err)
				}
				return
			}
			out, err := protojson.Marshal(m)
			if err != nil {
				t.Fatalf("re-encode %T: %v", m, err)
			}
			again := m.ProtoReflect().New().Interface()
			if err := protojson.Unmarshal(out, again); err != nil {
				t.Fatalf("decode re-encoded %s: %v", out, err)
			}
			if !proto.Equal(m, again) {
				t.Fatalf("round trip changed %T: %v -> %v", m, m, again)
			}
		}
		cs, err := readObject[*ambientv1.Session](strings.NewReader(string(body)), "name")
		check(err, cs, true)
		us := &ambientv1.UpdateSessionRequest{Id: "x"}
		check(readPatch[*ambientv1.Session](strings.NewReader(string(body)), "SessionPatchRequest", us, []string{"project_id"}), us, false)
		st := &ambientv1.UpdateSessionStatusRequest{Id: "x"}
		check(readPatch[*ambientv1.Session](strings.NewReader(string(body)), "SessionStatusPatchRequest", st, nil), st, false)
		cp, err := readObject[*ambientv1.Project](strings.NewReader(string(body)), "name")
		check(err, cp, true)
		ups := &ambientv1.UpdateProjectSettingsRequest{Id: "x"}
		check(readPatch[*ambientv1.ProjectSettings](strings.NewReader(string(body)), "ProjectSettingsPatchRequest", ups, nil), ups, false)
	})
}

// FuzzParseSearch: no panic on any query, and a parsed query evaluates on
// sessions with and without optional fields.
func FuzzParseSearch(f *testing.F) {
	for _, s := range []string{
		"name='p1'", "name='p1' and project_id='x'", "(a='1' or b='2')", "name like '%a\\%_'",
		"llm_max_tokens in (1, 2.5, '3')", "id != 'x'", "name = 'it''s'", "((((name='a'))))",
		"not name='a'", "name < 'a'", "created_at='x'", "metadata='x'", "name=", "'", "(", "name in ()",
		"llm_temperature=-1e400", "name ilike 'ÄÖ%'", "phase<>'Running'",
	} {
		f.Add(s)
	}
	sessions := []*ambientv1.Session{
		{Metadata: &ambientv1.ObjectReference{Id: "i"}, Name: "a"},
		{Metadata: &ambientv1.ObjectReference{Id: "j"}, Name: "it's", ProjectId: proto.String("x"), LlmMaxTokens: proto.Int32(3),
			LlmTemperature: proto.Float64(0.5), Phase: proto.String("Running")},
	}
	md := (&ambientv1.Session{}).ProtoReflect().Descriptor()
	f.Fuzz(func(_ *testing.T, q string) {
		pred, err := parseSearch(q, md)
		if err != nil || pred == nil {
			return
		}
		for _, s := range sessions {
			pred(s.ProtoReflect())
		}
	})
}

func TestParseSearchErrors(t *testing.T) {
	md := (&ambientv1.Session{}).ProtoReflect().Descriptor()
	tests := []struct{ q, want string }{
		{"not name='a'", "'not' is not supported"},
		{"name < 'a'", "unsupported character '<'"},
		{"name > 'a'", "unsupported character '>'"},
		{"name='a", "unterminated string"},
		{"name='a' and", "want a field name"},
		{"name='a' name='b'", "unexpected 'name'"},
		{"(name='a'", "want ')'"},
		{"created_at='x'", `unknown field "created_at"`},
		{"start_time='x'", `field "start_time" cannot be searched`},
		{"metadata='x'", `unknown field "metadata"`},
		{"name=5", "want a quoted string"},
		{"llm_max_tokens='many'", "want a number"},
		{"llm_max_tokens like '1%'", "like needs a text field"},
		{"name in ('a'", "want ')'"},
		{strings.Repeat("(", maxSearchDepth+1) + "name='a'" + strings.Repeat(")", maxSearchDepth+1), "nested deeper than"},
		{strings.Repeat("x", maxSearchLen+1), "longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.q[:min(len(tc.q), 40)], func(t *testing.T) {
			_, err := parseSearch(tc.q, md)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseSearch(%q) = %v, want an error containing %q", tc.q, err, tc.want)
			}
		})
	}
}

// FuzzTSLAccepts: the recognizer of the real server's search language
// (tsl.go) never panics, and memapi evaluates no query it refuses: a
// search memapi answers with items must be one the real server answers
// with items too, not its 400 id 21.
func FuzzTSLAccepts(f *testing.F) {
	for _, s := range []string{
		"name='p1'", "name = 'a' and (phase='x' or id!='y')", "a.b.c = 1", "x in ()", "x not between 1 and 2",
		"x is not null", "x ~= 'a'", "x * 2 + 1 > 3", "1e999 = x", "name='it''s'", "((name='a')", "name=", "'",
		"not not x='a'", "x ilike '%'", "x = -1.5e-3", "x = 'a' or", "x in ('a', 1, -2)",
	} {
		f.Add(s)
	}
	md := (&ambientv1.Session{}).ProtoReflect().Descriptor()
	f.Fuzz(func(t *testing.T, q string) {
		if tslAccepts(q) {
			return
		}
		if pred, err := parseSearch(q, md); err == nil && pred != nil {
			t.Fatalf("memapi evaluates %q, which the real server's parser refuses", q)
		}
	})
}
