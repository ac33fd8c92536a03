package bus_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/testenv"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestConnect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		server  natsserver.Options
		cfg     bus.ConnectConfig
		wantErr error
	}{
		{name: "no auth", cfg: bus.ConnectConfig{Name: "t"}},
		{name: "user password", server: natsserver.Options{Username: "u", Password: "p"}, cfg: bus.ConnectConfig{User: "u", Password: "p"}},
		{name: "token", server: natsserver.Options{Token: "s3cret"}, cfg: bus.ConnectConfig{Token: "s3cret"}},
		{name: "wrong token", server: natsserver.Options{Token: "s3cret"}, cfg: bus.ConnectConfig{Token: "nope"}, wantErr: bus.ErrNotConnected},
		{name: "two credential kinds", cfg: bus.ConnectConfig{Token: "a", User: "u"}, wantErr: bus.ErrInvalidConfig},
		{name: "cert without key", cfg: bus.ConnectConfig{TLS: bus.TLSConfig{CertFile: "c.pem"}}, wantErr: bus.ErrInvalidConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := testenv.NATSWith(t, tc.server)
			cfg := tc.cfg
			cfg.URL = srv.ClientURL()
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			nc, err := bus.Connect(ctx, cfg, discard())
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Connect err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer nc.Close()
			if !nc.IsConnected() {
				t.Fatalf("not connected")
			}
		})
	}
}

func TestConnectReconnectsAfterRestart(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	nc, err := bus.Connect(t.Context(), bus.ConnectConfig{URL: srv.ClientURL(), ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond}, discard())
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer nc.Close()
	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if nc.Stats().Reconnects == 0 || !nc.IsConnected() {
			return errors.New("not reconnected yet")
		}
		return nil
	})
}

// TestConnectWaitsForServer: Connect blocks until a server that is down at
// first comes up, instead of failing the service's start.
func TestConnectWaitsForServer(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	srv.Shutdown()
	type result struct {
		err error
		ok  bool
	}
	done := make(chan result, 1) // Connect's outcome
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		nc, err := bus.Connect(ctx, bus.ConnectConfig{URL: srv.ClientURL(), ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond}, discard())
		if err == nil {
			defer nc.Close()
		}
		done <- result{err: err, ok: err == nil && nc.IsConnected()}
	}()
	select {
	case r := <-done:
		t.Fatalf("Connect returned before the server was up: %v", r.err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	select {
	case r := <-done:
		if !r.ok {
			t.Fatalf("Connect = %v, want connected", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Connect did not return after the server came up")
	}
}

func TestEnsureStreamIdempotent(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	tests := []struct {
		name       string
		cfg        bus.StreamConfig
		wantMaxAge time.Duration
		wantDup    time.Duration
	}{
		{name: "create with defaults", cfg: bus.EventsStream(events.StreamName, events.SubjectPrefix, 1, 0), wantMaxAge: 72 * time.Hour, wantDup: 2 * time.Minute},
		{name: "same again", cfg: bus.EventsStream(events.StreamName, events.SubjectPrefix, 1, 0), wantMaxAge: 72 * time.Hour, wantDup: 2 * time.Minute},
		{name: "update max age", cfg: bus.EventsStream(events.StreamName, events.SubjectPrefix, 1, time.Hour), wantMaxAge: time.Hour, wantDup: 2 * time.Minute},
		{name: "shadow prefix", cfg: bus.EventsStream(events.ShadowStreamName, events.ShadowSubjectPrefix, 1, time.Minute), wantMaxAge: time.Minute, wantDup: time.Minute},
	}
	for _, tc := range tests { // sequential: each step builds on the last
		t.Run(tc.name, func(t *testing.T) {
			s, err := bus.EnsureStream(ctx, js, tc.cfg)
			if err != nil {
				t.Fatalf("EnsureStream: %v", err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatalf("Info: %v", err)
			}
			c := info.Config
			if c.MaxAge != tc.wantMaxAge || c.Duplicates != tc.wantDup || c.Storage != jetstream.FileStorage || c.Retention != jetstream.LimitsPolicy || c.Subjects[0] != tc.cfg.Subjects[0] {
				t.Fatalf("config = maxAge %s dup %s storage %v retention %v subjects %v; want maxAge %s dup %s file limits %v",
					c.MaxAge, c.Duplicates, c.Storage, c.Retention, c.Subjects, tc.wantMaxAge, tc.wantDup, tc.cfg.Subjects)
			}
		})
	}
	if _, err := bus.EnsureStream(ctx, js, bus.StreamConfig{Name: "X"}); !errors.Is(err, bus.ErrInvalidConfig) {
		t.Fatalf("EnsureStream without subjects err = %v, want ErrInvalidConfig", err)
	}
}

func TestEnsureKVIdempotent(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	for range 2 {
		b, err := bus.EnsureBuckets(ctx, js, bus.BucketsConfig{LeaseTTL: 3 * time.Second})
		if err != nil {
			t.Fatalf("EnsureBuckets: %v", err)
		}
		st, err := b.Leases.Status(ctx)
		if err != nil {
			t.Fatalf("leases status: %v", err)
		}
		if st.TTL() != 3*time.Second {
			t.Fatalf("lease TTL = %s, want 3s", st.TTL())
		}
	}
	kv, err := bus.EnsureKV(ctx, js, bus.LeasesBucket(1, 5*time.Second))
	if err != nil {
		t.Fatalf("EnsureKV update: %v", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.TTL() != 5*time.Second {
		t.Fatalf("updated lease TTL = %s, want 5s", st.TTL())
	}
}

// TestStreamAndKVSurviveRestart proves the file store: a published event and
// a KV entry are still there after the server restarts on the same store dir,
// and the same client connection carries on.
func TestStreamAndKVSurviveRestart(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	if _, err := bus.EnsureEventsStream(ctx, js, 1, 0); err != nil {
		t.Fatalf("EnsureEventsStream: %v", err)
	}
	b, err := bus.EnsureBuckets(ctx, js, bus.BucketsConfig{})
	if err != nil {
		t.Fatalf("EnsureBuckets: %v", err)
	}
	if _, err := js.Publish(ctx, events.SubjectPrefix+".sessions._.s1", []byte("payload")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if _, err := b.Objects.Put(ctx, "sessions.s1", []byte("obj")); err != nil {
		t.Fatalf("kv put: %v", err)
	}

	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}

	// The client reconnects on its own schedule (2 s between tries, with
	// jitter): 5 s was not always enough on a loaded machine.
	testenv.Eventually(t, 30*time.Second, func() error {
		s, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		msg, err := s.GetLastMsgForSubject(ctx, events.SubjectPrefix+".sessions._.s1")
		if err != nil {
			return err
		}
		if string(msg.Data) != "payload" {
			t.Fatalf("event data = %q, want payload", msg.Data)
		}
		return nil
	})
	kv, err := js.KeyValue(ctx, bus.BucketObjects)
	if err != nil {
		t.Fatalf("objects bucket after restart: %v", err)
	}
	e, err := kv.Get(ctx, "sessions.s1")
	if err != nil {
		t.Fatalf("kv get after restart: %v", err)
	}
	if string(e.Value()) != "obj" {
		t.Fatalf("kv value = %q, want obj", e.Value())
	}
}

// TestObjectsBucketTakesMarkerTTLs: whoever creates ambient-objects (the
// informer, or kube-reconciler when it starts first or after the bucket was
// lost) creates it with per-message TTLs allowed, so the informer's purge of
// a deleted object's key with an expiring marker works; a bucket made
// without them refused every such purge ("per-message TTL is disabled")
// until an informer started and updated it.
func TestObjectsBucketTakesMarkerTTLs(t *testing.T) {
	t.Parallel()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	ctx := t.Context()
	kv, err := bus.OpenKV(ctx, js, bus.ObjectsBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "sessions.a", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "sessions.a", jetstream.PurgeTTL(bus.DefaultObjectsMarkerTTL)); err != nil {
		t.Fatalf("purge with a marker ttl in a bucket OpenKV created: %v", err)
	}
}
