package bus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/libs/testenv/secretmount"
)

// TestPasswordFile: NATS_PASSWORD_FILE authenticates NATS_USER, a missing
// or empty file is a start-up error, and the password is read again on
// reconnect, so a rotated Secret works once the server drops the old one.
// The variable names the server resolves come from the process environment,
// so this test is not parallel.
func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	writeFile(t, conf, "authorization { users: [{user: svc, password: $BUS_TEST_NATS_PASSWORD}] }\n")
	t.Setenv("BUS_TEST_NATS_PASSWORD", "first0password")
	srv := testenv.NATSWith(t, natsserver.Options{ConfigFile: conf})

	pwFile := filepath.Join(dir, "password")
	writeFile(t, pwFile, "first0password\n") // a trailing newline, as editors write it
	cfg := bus.ConnectConfig{URL: srv.ClientURL(), User: "svc", PasswordFile: pwFile,
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, cfg, discard())
	if err != nil {
		t.Fatalf("Connect with the password file: %v", err)
	}
	defer nc.Close()

	// Rotate: the Secret changes, then the server is reloaded with it.
	writeFile(t, pwFile, "second0password")
	t.Setenv("BUS_TEST_NATS_PASSWORD", "second0password")
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if nc.Stats().Reconnects == 0 || !nc.IsConnected() {
			return errors.New("not reconnected with the rotated password yet")
		}
		return nil
	})

	for _, tc := range []struct{ name, content string }{{"empty", " \n"}, {"missing", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "password")
			if tc.content != "" {
				writeFile(t, p, tc.content)
			}
			bad := cfg
			bad.PasswordFile = p
			if _, err := bus.Connect(t.Context(), bad, discard()); !errors.Is(err, bus.ErrInvalidConfig) {
				t.Fatalf("Connect = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// TestPasswordFileUnusableReplacementWarnsOnce: a password file replaced
// by one holding no usable password (an empty Secret key) leaves the last
// good password in use for every reconnect that follows, with one warning
// however many reconnects there are, and the next good rotation is sent at
// the next reconnect. The reader of before warned on every reconnect.
func TestPasswordFileUnusableReplacementWarnsOnce(t *testing.T) {
	t.Parallel()
	srv, rotateServer := natsWithAuth(t, `authorization { users: [{user: svc, password: %q}] }`, "first0password")
	secrets := t.TempDir()
	pwFile := secretmount.Write(t, secrets, map[string]string{"password": "first0password\n"})["password"]
	logs := &testenv.Buffer{}
	cfg := bus.ConnectConfig{URL: srv.ClientURL(), User: "svc", PasswordFile: pwFile,
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("Connect with the password file: %v", err)
	}
	defer nc.Close()

	secretmount.Write(t, secrets, map[string]string{"password": "\n"})
	const reconnects = 3
	for i := range uint64(reconnects) {
		if err := nc.ForceReconnect(); err != nil {
			t.Fatalf("ForceReconnect: %v", err)
		}
		waitReconnected(t, nc, i+1)
	}
	warnings := 0
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, pwFile) {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("%d warnings naming %s over %d reconnects with an unusable password file, want 1:\n%s", warnings, pwFile, reconnects, logs)
	}

	secretmount.Write(t, secrets, map[string]string{"password": "second0password\n"})
	rotateServer("second0password")
	waitReconnected(t, nc, reconnects+1)
}

// TestTokenFileFollowsRotation: NATS_TOKEN_FILE is followed like the
// password file: once the Secret and then the server rotate the token, the
// connection reconnects with the new one. It read the file once at start
// and offered the old token forever before.
func TestTokenFileFollowsRotation(t *testing.T) {
	t.Parallel()
	srv, rotateServer := natsWithAuth(t, `authorization { token: %q }`, "first0token")
	secrets := t.TempDir()
	tokFile := secretmount.Write(t, secrets, map[string]string{"token": "first0token\n"})["token"]
	l := envconfig.New(envconfig.Map(map[string]string{bus.EnvNATSURL: srv.ClientURL(), bus.EnvNATSTokenFile: tokFile}))
	cfg := bus.LoadConnectConfig(l, bus.DefaultURL)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	cfg.ReconnectMin, cfg.ReconnectMax = 10*time.Millisecond, 50*time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, cfg, discard())
	if err != nil {
		t.Fatalf("Connect with the token file: %v", err)
	}
	defer nc.Close()

	secretmount.Write(t, secrets, map[string]string{"token": "second0token\n"})
	rotateServer("second0token")
	waitReconnected(t, nc, 1)
}

// TestAuthErrorsDuringRotationKeepReconnecting: when the server has the
// new password before the mounted Secret file does (the kubelet takes up
// to a minute), every reconnect in between is refused; the connection
// keeps retrying and reconnects once the file holds the new password.
// nats.go closed it for good at the second auth error in a row before
// (no nats.IgnoreAuthErrorAbort), and the service never reconnected.
func TestAuthErrorsDuringRotationKeepReconnecting(t *testing.T) {
	t.Parallel()
	srv, rotateServer := natsWithAuth(t, `authorization { users: [{user: svc, password: %q}] }`, "first0password")
	secrets := t.TempDir()
	pwFile := secretmount.Write(t, secrets, map[string]string{"password": "first0password\n"})["password"]
	logs := &testenv.Buffer{}
	cfg := bus.ConnectConfig{URL: srv.ClientURL(), User: "svc", PasswordFile: pwFile,
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("Connect with the password file: %v", err)
	}
	defer nc.Close()

	rotateServer("second0password") // the file still holds the old one
	const refusals = 4
	testenv.Eventually(t, 10*time.Second, func() error {
		n := strings.Count(strings.ToLower(logs.String()), "authorization violation")
		if nc.IsClosed() {
			t.Fatalf("connection closed for good after %d auth errors, while the password file awaited the rotation: %v", n, nc.LastError())
		}
		if n < refusals {
			return fmt.Errorf("%d auth errors logged, want %d", n, refusals)
		}
		return nil
	})
	secretmount.Write(t, secrets, map[string]string{"password": "second0password\n"})
	testenv.Eventually(t, 10*time.Second, func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("not reconnected with the rotated password (%s, last error %v)", nc.Status(), nc.LastError())
		}
		return nil
	})
}

// natsWithAuth starts a server whose config file is authConf with the
// secret put in for its %q, and returns it with a func that rotates the
// secret: the file rewritten with the new one, then the server reloaded,
// which disconnects the clients that authenticated with the old one.
func natsWithAuth(t *testing.T, authConf, secret string) (*natsserver.Server, func(secret string)) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "nats.conf")
	writeFile(t, conf, fmt.Sprintf(authConf, secret)+"\n")
	srv := testenv.NATSWith(t, natsserver.Options{ConfigFile: conf})
	return srv, func(secret string) {
		t.Helper()
		writeFile(t, conf, fmt.Sprintf(authConf, secret)+"\n")
		if err := srv.Reload(); err != nil {
			t.Fatalf("Reload: %v", err)
		}
	}
}

// waitReconnected waits until nc has reconnected at least n times and is
// connected.
func waitReconnected(t *testing.T, nc *nats.Conn, n uint64) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := nc.Stats().Reconnects; got < n || !nc.IsConnected() {
			return fmt.Errorf("%d reconnects (want at least %d), connected: %v, last error: %v", got, n, nc.IsConnected(), nc.LastError())
		}
		return nil
	})
}

func TestPasswordFileConfig(t *testing.T) {
	t.Parallel()
	pw := filepath.Join(t.TempDir(), "password")
	writeFile(t, pw, "x")
	tests := []struct {
		name    string
		env     map[string]string
		wantErr bool
	}{
		{name: "user and file", env: map[string]string{"NATS_USER": "svc", "NATS_PASSWORD_FILE": pw}},
		{name: "file without user", env: map[string]string{"NATS_PASSWORD_FILE": pw}, wantErr: true},
		{name: "file and password", env: map[string]string{"NATS_USER": "svc", "NATS_PASSWORD_FILE": pw, "NATS_PASSWORD": "p"}, wantErr: true},
		{name: "file and token", env: map[string]string{"NATS_USER": "svc", "NATS_PASSWORD_FILE": pw, "NATS_TOKEN": "t"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := envconfig.New(envconfig.Map(tc.env))
			cfg := bus.LoadConnectConfig(l, bus.DefaultURL)
			// A mix the connection refuses is refused at load already,
			// naming a variable.
			var ve *envconfig.VarError
			if err := l.Err(); tc.wantErr != errors.As(err, &ve) {
				t.Fatalf("load: %v, want an error naming a variable: %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if cfg.PasswordFile != pw {
				t.Fatalf("PasswordFile = %q, want %q", cfg.PasswordFile, pw)
			}
			if _, err := cfg.Options(discard()); err != nil {
				t.Fatalf("Options: %v", err)
			}
		})
	}
	l := envconfig.New(envconfig.Map(map[string]string{"NATS_USER": "svc", "NATS_PASSWORD_FILE": "/nonexistent/password"}))
	bus.LoadConnectConfig(l, bus.DefaultURL)
	if err := l.Err(); err == nil || !strings.Contains(err.Error(), "NATS_PASSWORD_FILE") {
		t.Fatalf("a missing password file: Err() = %v, want it to name NATS_PASSWORD_FILE", err)
	}
	// Files that exist but hold no usable password are refused at load
	// too, naming the variable (before, the connect failed later, naming
	// none), and the error never shows the password.
	for name, content := range map[string]string{"empty": "", "white space": " \n\t\n", "line break inside": "first-s3cret\nsecond-s3cret\n"} {
		bad := filepath.Join(t.TempDir(), "password")
		writeFile(t, bad, content)
		l := envconfig.New(envconfig.Map(map[string]string{"NATS_USER": "svc", "NATS_PASSWORD_FILE": bad}))
		bus.LoadConnectConfig(l, bus.DefaultURL)
		err := l.Err()
		if err == nil || !strings.Contains(err.Error(), "NATS_PASSWORD_FILE") {
			t.Errorf("%s password file: Err() = %v, want it to name NATS_PASSWORD_FILE", name, err)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s password file: the error shows the password: %v", name, err)
		}
	}
}

// TestCredentialsNeverLogged: a NATS_URL carrying user:password or a token
// reaches neither the log (LogValue, connect handlers) nor a connect error.
func TestCredentialsNeverLogged(t *testing.T) {
	t.Parallel()
	srv := testenv.NATSWith(t, natsserver.Options{Username: "svc", Password: "url0s3cret"})
	logs := &testenv.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	good := bus.ConnectConfig{URL: "nats://svc:url0s3cret@" + strings.TrimPrefix(srv.ClientURL(), "nats://")}
	log.Info("config", slog.Any("nats", good))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, good, log)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	nc.Close()

	bad := bus.ConnectConfig{URL: "nats://svc:wrong0s3cret@" + strings.TrimPrefix(srv.ClientURL(), "nats://") + ",nats://t0ken0s3cret@127.0.0.1:1"}
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = bus.Connect(ctx, bad, log)
	if err == nil {
		t.Fatal("connected with a wrong password")
	}
	log.Error("connect failed", slog.Any("err", err))
	for _, secret := range []string{"url0s3cret", "wrong0s3cret", "t0ken0s3cret"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log holds %q:\n%s", secret, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "svc:xxxxx@") {
		t.Errorf("log does not show the redacted URL:\n%s", logs.String())
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
