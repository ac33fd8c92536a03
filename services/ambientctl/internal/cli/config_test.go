package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// envTokenFile is AMBIENT_API_TOKEN_FILE, spelled as the services spell it.
const envTokenFile = EnvToken + envconfig.FileSuffix

// TestInvalidSettingsAreUsageErrors: every setting is checked before the
// command does anything on the network, with the validators the services
// use for the same variables, and a bad one is a usage error naming the
// flag and the variable its value came from. The endpoints in reach point
// at a closed port, so a value that slipped through would end in "cannot
// reach" (exit 1) instead.
func TestInvalidSettingsAreUsageErrors(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	const closed = "127.0.0.1:1"
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string // each must appear in stderr
	}{
		{
			name: "gRPC address without a port",
			env:  map[string]string{EnvAPIAddr: "localhost"},
			args: []string{"sessions", "list"},
			want: []string{`--api (or $AMBIENT_GRPC_SERVER_ADDR): want "HOST:PORT" with a host and 1 <= PORT <= 65535, got "localhost"`},
		},
		{
			name: "gRPC address flag out of range",
			args: []string{"sessions", "list", "--api", "localhost:70000"},
			want: []string{`--api (or $AMBIENT_GRPC_SERVER_ADDR): want "HOST:PORT" with a host and 1 <= PORT <= 65535, got "localhost:70000"`},
		},
		{
			name: "REST URL without a scheme",
			env:  map[string]string{EnvRESTURL: "localhost:8000"},
			args: []string{"sessions", "start", "s1"},
			want: []string{`--rest (or $AMBIENT_API_URL): want an absolute URL with scheme http|https, got "localhost:8000"`},
		},
		{
			name: "upstream REST URL variable is named as such",
			env:  map[string]string{EnvServerURL: "localhost:8000"},
			args: []string{"sessions", "stop", "s1"},
			want: []string{`--rest (or $AMBIENT_API_SERVER_URL): want an absolute URL with scheme http|https, got "localhost:8000"`},
		},
		{
			name: "NATS URL with a foreign scheme",
			env:  map[string]string{EnvNATSURL: "http://127.0.0.1:4222"},
			args: []string{"events", "tail"},
			want: []string{`--nats (or $NATS_URL): want comma-separated URLs with scheme nats|tls|ws|wss, got "http://127.0.0.1:4222"`},
		},
		{
			name: "NATS URL list with a bad item keeps its password out",
			env:  map[string]string{EnvNATSURL: "nats://u:s3cret@127.0.0.1:4222,bogus"},
			args: []string{"dlq", "list"},
			want: []string{`--nats (or $NATS_URL): want comma-separated URLs with scheme nats|tls|ws|wss, got "nats://u:xxxxx@127.0.0.1:4222,bogus"`},
		},
		{
			name: "proxy URL without a scheme",
			env:  map[string]string{EnvProxyURL: "127.0.0.1:9080"},
			args: []string{"chat", "s1", "hello"},
			want: []string{`--proxy (or $AMBIENT_PROXY_URL): want an absolute URL with scheme http|https, got "127.0.0.1:9080"`},
		},
		{
			name: "empty proxy flag",
			args: []string{"chat", "s1", "hello", "--proxy", ""},
			want: []string{`--proxy (or $AMBIENT_PROXY_URL): required, want a non-empty value, got nothing`},
		},
		{
			name: "tally URL with a foreign scheme",
			env:  map[string]string{EnvTallyURL: "ftp://127.0.0.1:9094"},
			args: []string{"tally"},
			want: []string{`--tally-url (or $AMBIENT_TALLY_URL): want an absolute URL with scheme http|https, got "ftp://127.0.0.1:9094"`},
		},
		{
			name: "token file that does not exist",
			env:  map[string]string{envTokenFile: missing},
			args: []string{"sessions", "list"},
			want: []string{fmt.Sprintf(`--token (or $AMBIENT_API_TOKEN_FILE): want a path to an existing regular file holding the secret, got %q`, missing)},
		},
		{
			name: "token and token file both set",
			env:  map[string]string{EnvToken: "tok", envTokenFile: tokenFile},
			args: []string{"sessions", "list"},
			want: []string{fmt.Sprintf(`--token (or $AMBIENT_API_TOKEN_FILE): want unset when AMBIENT_API_TOKEN is set (one of the two), got %q`, tokenFile)},
		},
		{
			name: "empty token flag",
			args: []string{"sessions", "list", "--token", ""},
			want: []string{`--token (or $AMBIENT_API_TOKEN): required, want a non-empty value (or AMBIENT_API_TOKEN_FILE), got nothing`},
		},
		{
			name: "TLS variable that is not a boolean",
			env:  map[string]string{EnvUseTLS: "yes"},
			args: []string{"sessions", "list"},
			want: []string{`--tls (or $AMBIENT_GRPC_USE_TLS): want true or false, got "yes"`},
		},
		{
			name: "CA file that does not exist",
			env:  map[string]string{EnvCAFile: missing},
			args: []string{"sessions", "list"},
			want: []string{fmt.Sprintf(`--ca-file (or $AMBIENT_GRPC_CA_FILE): want a path to an existing regular file, got %q`, missing)},
		},
		{
			name: "zero timeout",
			args: []string{"sessions", "list", "--timeout", "0"},
			want: []string{`--timeout: want a positive Go duration such as "30s", got "0s"`},
		},
		{
			name: "negative timeout",
			args: []string{"tally", "--timeout=-5s"},
			want: []string{`--timeout: want a positive Go duration such as "30s", got "-5s"`},
		},
		{
			name: "every bad setting at once",
			env:  map[string]string{EnvAPIAddr: "localhost", EnvProxyURL: "proxy", EnvTallyURL: "tally"},
			args: []string{"sessions", "list"},
			want: []string{"--api (or $AMBIENT_GRPC_SERVER_ADDR)", "--proxy (or $AMBIENT_PROXY_URL)", "--tally-url (or $AMBIENT_TALLY_URL)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.env[EnvAPIAddr] = closed
			h.env[EnvRESTURL] = "http://" + closed
			h.env[EnvNATSURL] = "nats://" + closed
			h.env[EnvProxyURL] = "http://" + closed
			h.env[EnvTallyURL] = "http://" + closed
			for k, v := range tc.env {
				h.env[k] = v
			}
			if _, ok := tc.env[EnvServerURL]; ok {
				delete(h.env, EnvRESTURL) // the upstream name is read only without ours
			}
			// The bound comes first so that a case's own --timeout, later,
			// replaces it.
			_, stderr, code := h.run(append([]string{"--timeout", "3s"}, tc.args...)...)
			if code != 2 {
				t.Errorf("exit %d, want 2 (usage error); stderr %q", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q\nwant it to contain %q", stderr, w)
				}
			}
			if strings.Contains(stderr, "s3cret") || strings.Contains(stderr, "cannot reach") {
				t.Errorf("stderr %q: leaks a password or reached for the network", stderr)
			}
		})
	}
}

// TestTokenFromFile: AMBIENT_API_TOKEN_FILE is read as the services read
// it, instead of falling back to the dev stack's token.
func TestTokenFromFile(t *testing.T) {
	api := testenv.API(t)
	h := newHarness(t, api)
	delete(h.env, EnvToken)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(api.Token()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.env[envTokenFile] = file
	h.mustRun("sessions", "list")

	if err := os.WriteFile(file, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := h.run("sessions", "list"); code != 1 || !strings.Contains(stderr, "rejected the token") {
		t.Fatalf("wrong token in the file: exit %d stderr %q", code, stderr)
	}
}

// TestFlagOverridesBadVariable: a flag replaces its variable, so the
// variable's value is not used and not checked.
func TestFlagOverridesBadVariable(t *testing.T) {
	api := testenv.API(t)
	h := newHarness(t, api)
	h.env[EnvProxyURL] = "not a url"
	h.mustRun("sessions", "list", "--proxy", "http://127.0.0.1:9080")
}

// TestHelpDoesNotPrintToken: the token is a secret (it may come from a
// file precisely to keep it out of sight), so --help shows no default.
func TestHelpDoesNotPrintToken(t *testing.T) {
	h := newHarness(t, nil)
	h.env[EnvToken] = "s3cret-token"
	h.env[EnvProxyToken] = "s3cret-proxy-token"
	if out := h.mustRun("--help"); strings.Contains(out, "s3cret-token") || strings.Contains(out, "s3cret-proxy-token") {
		t.Fatalf("--help prints a token:\n%s", out)
	}
}
