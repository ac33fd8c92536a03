package bus_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
)

// NATS password and token can come from files (NATS_PASSWORD_FILE,
// NATS_TOKEN_FILE), which keeps them out of the process environment.
func TestLoadConnectConfigSecretFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pw, tok := filepath.Join(dir, "password"), filepath.Join(dir, "token")
	for path, v := range map[string]string{pw: "pw-from-file\n", tok: "tok-from-file"} {
		if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l := envconfig.New(envconfig.Map(map[string]string{bus.EnvNATSUser: "rm", bus.EnvNATSPassword + envconfig.FileSuffix: pw}))
	c := bus.LoadConnectConfig(l, bus.DefaultURL)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	// The password file is kept as a path: the connection reads it on every
	// (re)connect so a rotated Secret is picked up (see TestPasswordFile).
	if c.PasswordFile != pw || c.Password != "" {
		t.Fatalf("password file %q password %q, want the password file's path", c.PasswordFile, c.Password)
	}
	// So is the token file (see TestTokenFileFollowsRotation).
	l = envconfig.New(envconfig.Map(map[string]string{bus.EnvNATSTokenFile: tok}))
	if c = bus.LoadConnectConfig(l, bus.DefaultURL); l.Err() != nil || c.TokenFile != tok || c.Token != "" {
		t.Fatalf("token file %q token %q (%v), want the token file's path", c.TokenFile, c.Token, l.Err())
	}
	l = envconfig.New(envconfig.Map(map[string]string{bus.EnvNATSUser: "rm", bus.EnvNATSPassword: "x", bus.EnvNATSPassword + envconfig.FileSuffix: pw}))
	c = bus.LoadConnectConfig(l, bus.DefaultURL)
	if _, err := c.Options(slog.New(slog.DiscardHandler)); l.Err() == nil && err == nil {
		t.Fatal("NATS_PASSWORD and NATS_PASSWORD_FILE both accepted")
	}
}

// TestLoadConnectConfigRefusesCredentialMixes: what the connection would
// refuse at connect time without naming a variable is refused at load,
// naming it.
func TestLoadConnectConfigRefusesCredentialMixes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want string // the error's start
	}{
		{"password without user", map[string]string{bus.EnvNATSPassword: "pw"}, bus.EnvNATSUser + ": want the user of"},
		{"user and token", map[string]string{bus.EnvNATSUser: "u", bus.EnvNATSPassword: "pw", bus.EnvNATSToken: "t"}, bus.EnvNATSToken + ": want unset when"},
		{"creds and user", map[string]string{bus.EnvNATSCredsFile: file, bus.EnvNATSUser: "u", bus.EnvNATSPassword: "pw"}, bus.EnvNATSUser + "/" + bus.EnvNATSPassword + ": want unset when"},
		{"password and its file", map[string]string{bus.EnvNATSUser: "u", bus.EnvNATSPassword: "pw", bus.EnvNATSPasswordFile: file}, bus.EnvNATSPassword + ": want unset when"},
		{"certificate without key", map[string]string{bus.EnvNATSCertFile: file}, bus.EnvNATSKeyFile + ": want set with"},
		{"key without certificate", map[string]string{bus.EnvNATSKeyFile: file}, bus.EnvNATSCertFile + ": want set with"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := envconfig.New(envconfig.Map(tc.env))
			bus.LoadConnectConfig(l, bus.DefaultURL)
			if err := l.Err(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one starting %q", err, tc.want)
			}
		})
	}
}
