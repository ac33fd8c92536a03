package natsserver_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ambient-code/control-plane/libs/natsserver"
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
