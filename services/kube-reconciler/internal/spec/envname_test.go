package spec

import (
	"strings"
	"testing"

	sessionlib "github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/validation"
)

// kubeEnvNameFault is what the kube-apiserver says of name as a
// container's variable: IsEnvVarName's faults as envVars used to join
// them, "" when it accepts the name.
func kubeEnvNameFault(name string) string {
	return strings.Join(validation.IsEnvVarName(name), "; ")
}

// TestEnvVarNameMatchesKubernetes: libs/session's hand-written name check
// (kept free of apimachinery for runner-manager) accepts and refuses the
// names Kubernetes does, in Kubernetes' words, for names at every edge
// of IsEnvVarName's rule (^[-._a-zA-Z][-._a-zA-Z0-9]*$, and not ".", ".."
// nor starting with "..").
func TestEnvVarNameMatchesKubernetes(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		"", "a", "Z", "_", "-", ".", "..", "...", ".a", "..a", "a.", "a..", "a..b", "-.", ".-", "._", "_..",
		"1", "1a", "a1", "-1", ".1", "_1", "..1", "0", "9a", "a9", "A_B.C-D9", "my.env-name", "MY_ENV.NAME", "MyEnvName1",
		"a b", " a", "a ", "a=b", "=", "a\x00", "\x00", "a\n", "\na", "a\r\n", "a\t", "a/b", "a:b", "a$", "$a", "a@b", "a+b",
		"Ä", "aÄ", "é", "ǅ", "ａ", "a\u200b", "٣", "a٣", "\xff", "a\xff", "\xc3", "a\xc3\x28", "\U0001F600",
		"..=", "..\x00", "..Ä", ". .", "`", "[", "{", "~", "@", "^", "\x7f",
		strings.Repeat("a", 100000), strings.Repeat(".", 3) + strings.Repeat("a", 300),
	} {
		want := kubeEnvNameFault(name)
		if got := sessionlib.EnvVarNameFault(name); got != want {
			t.Errorf("EnvVarNameFault(%q) =\n%q\nIsEnvVarName says\n%q", clip(name), got, want)
		}
	}
}

// FuzzEnvVarNameMatchesKubernetes: for any string, libs/session accepts
// an environment variable name exactly when Kubernetes does, and says why
// not in Kubernetes' words.
func FuzzEnvVarNameMatchesKubernetes(f *testing.F) {
	for _, seed := range []string{"", "A", "_a.b-c9", "1a", "..", "..x", ".", "a=b", "Ä", "a\x00", "\xff", "a\n", "..="} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		want := kubeEnvNameFault(name)
		got := sessionlib.EnvVarNameFault(name)
		if (got == "") != (want == "") {
			t.Fatalf("name %q: libs/session accepts it %v, IsEnvVarName accepts it %v", name, got == "", want == "")
		}
		if got != want {
			t.Fatalf("name %q: libs/session says %q, IsEnvVarName %q", name, got, want)
		}
	})
}

// TestEnvVarsMessages: a bad environment_variables is reported as it was
// when envVars called IsEnvVarName itself: the field, and Kubernetes'
// words for a bad name.
func TestEnvVarsMessages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ raw, want string }{
		{`{"1=x": "y"}`, `field environment_variables: name "1=x": ` + kubeEnvNameFault("1=x")},
		{`{"..a": "y"}`, `field environment_variables: name "..a": must not start with '..'`},
		{`{"A": 1}`, `field environment_variables: not a JSON object of strings: json: cannot unmarshal number into Go value of type string`},
		{`{"A": "1"} x`, `field environment_variables: not a JSON object of strings: trailing data after the JSON value`},
		{`{"A": "x\u0000"}`, `field environment_variables: value of "A" holds a NUL byte`},
	} {
		_, err := Session(session("s1", func(s *ambientv1.Session) { s.EnvironmentVariables = proto.String(tc.raw) }), "ns")
		if err == nil || err.Error() != tc.want {
			t.Errorf("environment_variables %s: err =\n%v\nwant\n%s", tc.raw, err, tc.want)
		}
	}
}
