package bus_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestURLCredentialsNeverLogged: a NATS_URL carrying user:password (or a
// token as user) is logged and reported redacted: in the config's log
// value, in the connect logs, and in the error of a connect that fails.
func TestURLCredentialsNeverLogged(t *testing.T) {
	t.Parallel()
	srv := testenv.NATSWith(t, natsserver.Options{Username: "svc", Password: "s3cret-pw"})
	host := strings.TrimPrefix(srv.ClientURL(), "nats://")
	var logs lockedBuffer // nats.go's handlers log from its own goroutines
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := bus.ConnectConfig{Name: "t", URL: "nats://svc:s3cret-pw@" + host}
	log.Info("config", slog.Any("nats", cfg))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, cfg, log)
	if err != nil {
		t.Fatalf("connect with credentials in the URL: %v", err)
	}
	nc.Close()

	bad := bus.ConnectConfig{Name: "t", URL: "nats://s3cret-token@" + testenv.FreeAddr(t)}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel2()
	_, err = bus.Connect(ctx2, bad, log)
	if err == nil {
		t.Fatal("connect to nothing succeeded")
	}
	out := logs.String() + err.Error()
	if strings.Contains(out, "s3cret") {
		t.Fatalf("credentials leaked:\n%s", out)
	}
	if !strings.Contains(out, "svc:xxxxx@") || !strings.Contains(err.Error(), "xxxxx@") {
		t.Fatalf("redacted URL missing:\n%s", out)
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
