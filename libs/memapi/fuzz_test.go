package memapi

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// FuzzDecodeJSON feeds REST request bodies to decodeJSON. Properties: no
// panic; a failure wraps ErrBadBody; a decoded body re-encodes and decodes
// to an equal message.
func FuzzDecodeJSON(f *testing.F) {
	for _, seed := range []string{
		`{"name":"demo","prompt":"hello","project_id":"p"}`,
		`{"name":"x","llmTemperature":0.5,"llm_max_tokens":12,"timeout":3}`,
		`{"phase":"Running","start_time":"2026-01-02T03:04:05.123456789Z","sdk_restart_count":2}`,
		`{"labels":"{\"a\":\"b\"}","repos":"[{\"url\":\"u\"}]"}`,
		`{"name":"\u0000\ud800"}`,
		`{}`, ``, `null`, `[]`, `{"name":`, `{"color":"red"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, m := range []proto.Message{
			&ambientv1.CreateSessionRequest{}, &ambientv1.UpdateSessionStatusRequest{},
			&ambientv1.CreateProjectRequest{}, &ambientv1.UpdateProjectSettingsRequest{},
		} {
			err := decodeJSON(bytes.NewReader(body), m)
			if err != nil {
				if !errors.Is(err, ErrBadBody) {
					t.Fatalf("error %v does not wrap ErrBadBody", err)
				}
				continue
			}
			out, err := jsonOut.Marshal(m)
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
	})
}

// FuzzParsePageQuery: no panic, and accepted values are what
// strconv would give.
func FuzzParsePageQuery(f *testing.F) {
	for _, s := range [][2]string{{"1", "500"}, {"", ""}, {"-1", "0"}, {"abc", "1"}, {"99999999999", "1"}, {"+3", " 4"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, page, size string) {
		p, n, err := parsePageQuery(page, size)
		if err != nil {
			return
		}
		cp, cn := clampPage(p, n)
		if cp < 1 || cn < 1 || cn > MaxPageSize {
			t.Fatalf("clamp(%d, %d) = %d, %d", p, n, cp, cn)
		}
	})
}
