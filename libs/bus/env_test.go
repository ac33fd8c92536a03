package bus_test

import (
	"log/slog"
	"os"
	"path/filepath"
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
	l := envconfig.New(envconfig.Map(map[string]string{
		bus.EnvNATSUser: "rm", bus.EnvNATSPassword + envconfig.FileSuffix: pw, bus.EnvNATSToken + envconfig.FileSuffix: tok,
	}))
	c := bus.LoadConnectConfig(l, bus.DefaultURL)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	// The password file is kept as a path: the connection reads it on every
	// (re)connect so a rotated Secret is picked up (see TestPasswordFile).
	if c.PasswordFile != pw || c.Password != "" || c.Token != "tok-from-file" {
		t.Fatalf("password file %q password %q token %q, want the password file's path and the token file's content", c.PasswordFile, c.Password, c.Token)
	}
	l = envconfig.New(envconfig.Map(map[string]string{bus.EnvNATSUser: "rm", bus.EnvNATSPassword: "x", bus.EnvNATSPassword + envconfig.FileSuffix: pw}))
	c = bus.LoadConnectConfig(l, bus.DefaultURL)
	if _, err := c.Options(slog.New(slog.DiscardHandler)); l.Err() == nil && err == nil {
		t.Fatal("NATS_PASSWORD and NATS_PASSWORD_FILE both accepted")
	}
}
