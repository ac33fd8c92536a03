package session_test

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/session"
)

// The Kubernetes message for a name outside IsEnvVarName's regular
// expression (kube-reconciler's tests hold EnvVarNameFault to the real
// IsEnvVarName).
const badChars = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', " +
	"and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', " +
	"regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"

func TestEnvironmentVariables(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, raw string
		want      map[string]string
	}{
		{"empty", "", nil},
		{"blank", " \n\t", nil},
		{"null", "null", nil},
		{"null spaced", " null ", nil},
		{"empty object", "{}", nil},
		{"empty object spaced", " { } ", nil},
		{"object", ` {"A":"1","my.var-x":"","_B":"a=b","-":"x","a..b":"y"} `,
			map[string]string{"A": "1", "my.var-x": "", "_B": "a=b", "-": "x", "a..b": "y"}},
		{"duplicate name: the last wins, as encoding/json decodes", `{"A":"1","A":"2"}`, map[string]string{"A": "2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := session.EnvironmentVariables(tc.raw)
			if err != nil || !maps.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Fatalf("EnvironmentVariables(%q) = %v, %v; want %v", tc.raw, got, err, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, raw, msg string }{
		{"not JSON", `A=1`, "not a JSON object of strings: invalid character 'A' looking for beginning of value"},
		{"array", `["A"]`, "not a JSON object of strings: json: cannot unmarshal array into Go value of type map[string]string"},
		{"number value", `{"A":1}`, "not a JSON object of strings: "},
		{"null in an object", `{"A":null,"B":{}}`, "not a JSON object of strings: "},
		{"trailing data", `{"A":"1"} {"B":"2"}`, "not a JSON object of strings: trailing data after the JSON value"},
		{"truncated", `{"A":"1"`, "not a JSON object of strings: unexpected EOF"},
		{"empty name", `{"":"x"}`, `name "": ` + badChars},
		{"leading digit", `{"1A":"x"}`, `name "1A": ` + badChars},
		{"equals sign", `{"A=B":"x"}`, `name "A=B": ` + badChars},
		{"space", `{"A B":"x"}`, `name "A B": ` + badChars},
		{"non-ASCII", `{"Ä":"x"}`, `name "Ä": ` + badChars},
		{"NUL in a name", `{"A\u0000":"x"}`, `name "A\x00": ` + badChars},
		{"dot", `{".":"x"}`, `name ".": must not be '.'`},
		{"dot-dot", `{"..":"x"}`, `name "..": must not be '..'`},
		{"starting with dot-dot", `{"..x":"x"}`, `name "..x": must not start with '..'`},
		{"both faults", `{"..=":"x"}`, `name "..=": ` + badChars + `; must not start with '..'`},
		{"NUL in a value", `{"A":"x\u0000y"}`, `value of "A" holds a NUL byte`},
		// Sorted: the same input reports the same fault whatever the map's order.
		{"first fault by name", `{"Z":"\u0000","B":"\u0000","1":"x"}`, `name "1": ` + badChars},
		{"long name clipped", `{"` + strings.Repeat("1", 200) + `":"x"}`, `name "` + strings.Repeat("1", 128) + `...": `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := session.EnvironmentVariables(tc.raw)
			if !errors.Is(err, session.ErrInvalidEnvironmentVariables) || got != nil {
				t.Fatalf("EnvironmentVariables(%q) = %v, %v; want ErrInvalidEnvironmentVariables", tc.raw, got, err)
			}
			// The fault alone: each caller names the field its own way.
			if !strings.HasPrefix(err.Error(), tc.msg) || strings.Contains(err.Error(), session.ErrInvalidEnvironmentVariables.Error()) {
				t.Errorf("message\n%q\nwant it to start with\n%q", err, tc.msg)
			}
		})
	}
}

// TestDecodeJSON: exactly one JSON value of the type asked for, the
// decoder every JSON field of a session is read with.
func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	got, err := session.DecodeJSON[map[string]int](" {\"a\":1}\n")
	if err != nil || !maps.Equal(got, map[string]int{"a": 1}) {
		t.Fatalf("DecodeJSON = %v, %v", got, err)
	}
	for _, bad := range []string{"", " ", `{"a":1} {}`, `{"a":1} x`, `{"a":1}]`, `{"a":"1"}`, `[]`, `{"a":1`} {
		if got, err := session.DecodeJSON[map[string]int](bad); err == nil || got != nil {
			t.Errorf("DecodeJSON(%q) = %v, %v; want an error and no value", bad, got, err)
		}
	}
	if _, err := session.DecodeJSON[[]int](`[1] [2]`); err == nil || err.Error() != "trailing data after the JSON value" {
		t.Errorf("trailing data: err = %v", err)
	}
}

// FuzzEnvironmentVariables: any text is refused with an error wrapping
// ErrInvalidEnvironmentVariables, or gives variables every name of which
// EnvVarNameFault accepts (so no "=", NUL or empty name), with no NUL in a
// value and at least one variable; never a panic.
func FuzzEnvironmentVariables(f *testing.F) {
	for _, seed := range []string{"", "null", "{}", `{"A":"1"}`, `{"1":"x"}`, `{"A":"\u0000"}`, `[]`, `{"..x":""}`, `{"a":"b"} x`,
		`{"A":"1","A":"\u0000"}`, `{"\u00c4":"x"}`, `{"A":null}`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		env, err := session.EnvironmentVariables(raw)
		if err != nil {
			if !errors.Is(err, session.ErrInvalidEnvironmentVariables) || env != nil {
				t.Fatalf("EnvironmentVariables(%q) = %v, %v; want no variables and ErrInvalidEnvironmentVariables", raw, env, err)
			}
			return
		}
		if env != nil && len(env) == 0 {
			t.Fatalf("EnvironmentVariables(%q) = an empty map, want nil", raw)
		}
		for k, v := range env {
			if why := session.EnvVarNameFault(k); why != "" || k == "" || strings.ContainsAny(k, "=\x00") {
				t.Fatalf("EnvironmentVariables(%q) accepted the name %q (%s)", raw, k, why)
			}
			if strings.ContainsRune(v, 0) {
				t.Fatalf("EnvironmentVariables(%q) accepted %s with a NUL in its value", raw, k)
			}
		}
	})
}
