package apiclient_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/envconfig"
)

// The API token can come from a file (AMBIENT_API_TOKEN_FILE, a mounted
// Secret), which keeps it out of the process environment. The file is read
// at load time (an unusable one stops the start), and the client gets the
// file, not the token read, so that it follows a rotation.
func TestLoadEnvTokenFile(t *testing.T) {
	t.Parallel()
	if apiclient.EnvAPITokenFile != apiclient.EnvAPIToken+envconfig.FileSuffix {
		t.Fatalf("EnvAPITokenFile = %q, but the loader reads %q", apiclient.EnvAPITokenFile, apiclient.EnvAPIToken+envconfig.FileSuffix)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		env        map[string]string
		want       string
		wantClient apiclient.Config
		wantErr    bool
	}{
		{"variable", map[string]string{apiclient.EnvAPIToken: "env-token"}, "env-token", apiclient.Config{Token: "env-token"}, false},
		{"file", map[string]string{apiclient.EnvAPITokenFile: file}, "file-token", apiclient.Config{TokenFile: file}, false},
		{"both", map[string]string{apiclient.EnvAPIToken: "env-token", apiclient.EnvAPITokenFile: file}, "", apiclient.Config{TokenFile: file}, true},
		{"neither", map[string]string{}, "", apiclient.Config{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := envconfig.New(envconfig.Map(tc.env))
			e := apiclient.LoadEnv(l)
			if err := l.Err(); (err != nil) != tc.wantErr || e.Token.Reveal() != tc.want {
				t.Fatalf("token %q, err %v; want %q, error %v", e.Token.Reveal(), err, tc.want, tc.wantErr)
			}
			got := e.Config()
			if got.Token != tc.wantClient.Token || got.TokenFile != tc.wantClient.TokenFile {
				t.Errorf("client Token %q, TokenFile %q; want %q, %q", got.Token, got.TokenFile, tc.wantClient.Token, tc.wantClient.TokenFile)
			}
		})
	}
}

// TestLoadEnvConfig: unset variables take the dev stack's defaults, set ones
// reach the client Config.
func TestLoadEnvConfig(t *testing.T) {
	t.Parallel()
	ca, _ := selfSigned(t)
	notPEM := filepath.Join(t.TempDir(), "not-a-ca.pem")
	if err := os.WriteFile(notPEM, []byte("pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want apiclient.Config
	}{
		{"defaults", map[string]string{apiclient.EnvAPIToken: "tok"}, apiclient.Config{Addr: "localhost:8001", Token: "tok"}},
		{"all set", map[string]string{
			apiclient.EnvAPIToken:   "tok",
			apiclient.EnvGRPCAddr:   "api.example:9000",
			apiclient.EnvGRPCUseTLS: "true",
			apiclient.EnvGRPCCAFile: ca,
		}, apiclient.Config{Addr: "api.example:9000", Token: "tok", UseTLS: true, CAFile: ca}},
	}
	t.Run("CA without TLS", func(t *testing.T) {
		t.Parallel()
		l := envconfig.New(envconfig.Map(map[string]string{apiclient.EnvAPIToken: "tok", apiclient.EnvGRPCCAFile: ca}))
		apiclient.LoadEnv(l)
		if err := l.Err(); err == nil || !strings.Contains(err.Error(), apiclient.EnvGRPCCAFile+": want unset unless") {
			t.Fatalf("err = %v, want %s refused without TLS (the token would go in plain text)", err, apiclient.EnvGRPCCAFile)
		}
	})
	t.Run("CA file without a certificate", func(t *testing.T) {
		t.Parallel()
		l := envconfig.New(envconfig.Map(map[string]string{apiclient.EnvAPIToken: "tok", apiclient.EnvGRPCUseTLS: "true", apiclient.EnvGRPCCAFile: notPEM}))
		apiclient.LoadEnv(l)
		if err := l.Err(); err == nil || !strings.Contains(err.Error(), apiclient.EnvGRPCCAFile+": want") || !strings.Contains(err.Error(), "no PEM certificate") {
			t.Fatalf("err = %v, want %s refused at load (no PEM certificate in it)", err, apiclient.EnvGRPCCAFile)
		}
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := envconfig.New(envconfig.Map(tc.env))
			got := apiclient.LoadEnv(l).Config()
			if err := l.Err(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Config (-want +got):\n%s", diff)
			}
		})
	}
}
