package bus_test

import (
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
	if c.Password != "pw-from-file" || c.Token != "tok-from-file" {
		t.Fatalf("password %q token %q, want the files' contents", c.Password, c.Token)
	}
	l = envconfig.New(envconfig.Map(map[string]string{bus.EnvNATSPassword: "x", bus.EnvNATSPassword + envconfig.FileSuffix: pw}))
	bus.LoadConnectConfig(l, bus.DefaultURL)
	if l.Err() == nil {
		t.Fatal("NATS_PASSWORD and NATS_PASSWORD_FILE both accepted")
	}
}
