package natsserver_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/testenv"
)

func TestStartRestartShutdown(t *testing.T) {
	t.Parallel()
	srv, err := natsserver.Start(natsserver.Options{StoreDir: t.TempDir(), Port: natsserver.RandomPort})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	url, port := srv.ClientURL(), srv.Port()
	if port <= 0 {
		t.Fatalf("port = %d, want the resolved port", port)
	}
	if !srv.NATS().JetStreamEnabled() {
		t.Fatal("JetStream is off")
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if srv.ClientURL() != url {
		t.Fatalf("URL after restart = %s, want %s", srv.ClientURL(), url)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	nc.Close()
	srv.Shutdown()
	srv.Shutdown() // idempotent
	if srv.NATS() != nil {
		t.Fatal("server still set after Shutdown")
	}
}

func TestStartValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts natsserver.Options
	}{
		{name: "no store dir", opts: natsserver.Options{Port: natsserver.RandomPort}},
		{name: "token and user", opts: natsserver.Options{StoreDir: "x", Port: natsserver.RandomPort, Token: "t", Username: "u"}},
		{name: "missing config file", opts: natsserver.Options{StoreDir: "x", Port: natsserver.RandomPort, ConfigFile: "/nonexistent/nats.conf"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := natsserver.Start(tc.opts); !errors.Is(err, natsserver.ErrInvalidOption) {
				t.Fatalf("Start err = %v, want ErrInvalidOption", err)
			}
		})
	}
}

// TestConfigFile: users and permissions come from a nats.conf file (with an
// include and a password from the environment, as the chart's NATS reads
// them), while the store, host and port stay the embedder's; Reload applies a
// changed file and drops clients whose password no longer works.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("NATSSERVER_TEST_PASSWORD", "p1")
	writeFile(t, filepath.Join(dir, "auth", "auth.conf"), `authorization {
  users: [
    {user: app, password: $NATSSERVER_TEST_PASSWORD, permissions: {publish: {allow: ["ok.>"]}, subscribe: {allow: ["ok.>"]}}}
  ]
}
`)
	conf := filepath.Join(dir, "main", "nats.conf")
	writeFile(t, conf, "port: 4222\ninclude ../auth/auth.conf\n")
	srv, err := natsserver.Start(natsserver.Options{StoreDir: t.TempDir(), Port: natsserver.RandomPort, ConfigFile: conf})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	if srv.Port() == 4222 {
		t.Fatal("the file's port won over Options.Port")
	}
	if !srv.NATS().JetStreamEnabled() {
		t.Fatal("JetStream is off")
	}
	if nc, err := nats.Connect(srv.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	}
	errs := make(chan error, 8) // async permission errors
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("app", "p1"), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("connect as app: %v", err)
	}
	defer nc.Close()
	if err := nc.Publish("denied.x", nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("async error %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publish outside the user's permissions was not refused")
	}

	nc.Close()

	// The client the reload must disconnect has never sent or received a
	// message: nats-server (v2.15.2 and .3) reads a disconnected client's
	// message counters without synchronisation in its auth-error event
	// (sendAccountAuthErrorEvent), a data race with the read loop's atomic
	// add that -race reports whenever the client had published.
	idle, err := nats.Connect(srv.ClientURL(), nats.UserInfo("app", "p1"))
	if err != nil {
		t.Fatalf("connect as app: %v", err)
	}
	defer idle.Close()
	t.Setenv("NATSSERVER_TEST_PASSWORD", "p2")
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if idle.IsConnected() {
			return errors.New("a client with the old password is still connected after Reload")
		}
		return nil
	})
	nc2, err := nats.Connect(srv.ClientURL(), nats.UserInfo("app", "p2"))
	if err != nil {
		t.Fatalf("connect with the new password: %v", err)
	}
	nc2.Close()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.TrimLeft(content, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
}
