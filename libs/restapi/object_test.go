package restapi_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

func keys(t *testing.T, b []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestObjectIsFlat(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.UTC))
	s := &ambientv1.Session{
		Metadata: &ambientv1.ObjectReference{Id: "abc", Kind: "Session", Href: "/api/ambient/v1/sessions/abc", CreatedAt: at, UpdatedAt: at},
		Name:     "demo", LlmTemperature: proto.Float64(0), LlmMaxTokens: proto.Int32(4000), Phase: proto.String(""),
		StartTime: at,
	}
	b, err := restapi.MarshalObject(s)
	if err != nil {
		t.Fatal(err)
	}
	// Set optional fields are present even when zero; unset ones are absent.
	want := []string{"created_at", "href", "id", "kind", "llm_max_tokens", "llm_temperature", "name", "phase", "start_time", "updated_at"}
	if got := keys(t, b); !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v (%s)", got, want, b)
	}
	var typed struct {
		CreatedAt string  `json:"created_at"`
		Temp      float64 `json:"llm_temperature"`
		Tokens    int     `json:"llm_max_tokens"`
	}
	if err := json.Unmarshal(b, &typed); err != nil || typed.CreatedAt != "2026-12-01T10:00:00.123456Z" || typed.Tokens != 4000 {
		t.Fatalf("values %+v (%v) in %s", typed, err, b)
	}
	back := &ambientv1.Session{}
	if err := restapi.UnmarshalObject(b, back); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(s, back, protocmp.Transform()); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}

	// A required scalar is written even when empty.
	if got := keys(t, must(restapi.MarshalObject(&ambientv1.ProjectSettings{}))); !slices.Equal(got, []string{"project_id"}) {
		t.Fatalf("empty settings keys %v", got)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestUnmarshalObjectErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
		discard          bool
	}{
		{"not json", `{"name":`, "unexpected end of JSON input", false},
		{"array", `[]`, "cannot unmarshal array", false},
		{"null", `null`, "null is not an object", false},
		{"unknown key", `{"name":"a","color":"red"}`, `json: unknown field "color"`, false},
		{"camelCase key", `{"projectId":"p"}`, `json: unknown field "projectId"`, false},
		{"nested metadata is no flat key", `{"metadata":{"id":"x"}}`, `json: unknown field "metadata"`, false},
		{"wrong type", `{"timeout":"soon"}`, "timeout", false},
		{"bad timestamp", `{"created_at":"yesterday"}`, "invalid google.protobuf.Timestamp", false},
		{"wrong type even when discarding", `{"timeout":"soon","x":1}`, "timeout", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := restapi.UnmarshalOptions{DiscardUnknown: tc.discard}.UnmarshalObject([]byte(tc.body), &ambientv1.Session{})
			var de *restapi.DecodeError
			if !errors.As(err, &de) || !errors.Is(err, restapi.ErrBadObject) || !strings.Contains(de.Detail, tc.want) {
				t.Fatalf("err %v, want a DecodeError about %q", err, tc.want)
			}
		})
	}
	s := &ambientv1.Session{}
	if err := (restapi.UnmarshalOptions{DiscardUnknown: true}).UnmarshalObject([]byte(`{"id":"i","name":"n","interactive":true}`), s); err != nil || s.GetName() != "n" || s.GetMetadata().GetId() != "i" {
		t.Fatalf("discarding unknown keys: %v %v", s, err)
	}
}

func TestListAndError(t *testing.T) {
	b, err := restapi.MarshalList(restapi.KindProject, 2, 7, []*ambientv1.Project{{Name: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(t, b); !slices.Equal(got, []string{"items", "kind", "page", "size", "total"}) {
		t.Fatalf("list keys %v", got)
	}
	if !strings.Contains(string(b), `"kind":"ProjectList","page":2,"size":1,"total":7`) {
		t.Fatalf("list %s", b)
	}
	empty, err := restapi.MarshalList[*ambientv1.Session](restapi.KindSession, 1, 0, nil)
	if err != nil || !strings.Contains(string(empty), `"items":[]`) {
		t.Fatalf("empty list %s (%v): items must be [] not null", empty, err)
	}
	e := restapi.NewError(404, restapi.ErrorIDNotFound, "Session with id='nope' not found", "op1")
	eb, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"kind":"Error","id":"7","code":"ambient-api-server-7","href":"/api/ambient/v1/errors/7","reason":"Session with id='nope' not found","operation_id":"op1"}`
	if string(eb) != want {
		t.Fatalf("error object %s, want %s", eb, want)
	}
	if e.Error() != "404 ambient-api-server-7: Session with id='nope' not found" {
		t.Fatalf("Error() = %q", e.Error())
	}
}

// FuzzUnmarshalObject: no panic; an accepted document re-encodes to one
// that decodes to an equal message (the flat form loses nothing).
func FuzzUnmarshalObject(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","kind":"Session","href":"/x","created_at":"2026-01-02T03:04:05.1Z","name":"n","llm_temperature":0.7}`,
		`{"name":"n","start_time":"2026-01-02T03:04:05Z","sdk_restart_count":2,"labels":"{}"}`,
		`{}`, `null`, `[]`, `{"metadata":null}`, `{"name":null}`, `{"updated_at":"x"}`, `{"timeout":1e99}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, discard := range []bool{false, true} {
			s := &ambientv1.Session{}
			if err := (restapi.UnmarshalOptions{DiscardUnknown: discard}).UnmarshalObject(b, s); err != nil {
				if !errors.Is(err, restapi.ErrBadObject) {
					t.Fatalf("error %v is no ErrBadObject", err)
				}
				continue
			}
			out, err := restapi.MarshalObject(s)
			if err != nil {
				t.Fatalf("re-encode %v: %v", s, err)
			}
			again := &ambientv1.Session{}
			if err := restapi.UnmarshalObject(out, again); err != nil {
				t.Fatalf("decode re-encoded %s: %v", out, err)
			}
			if !proto.Equal(s, again) {
				t.Fatalf("round trip changed %v -> %v", s, again)
			}
		}
	})
}
