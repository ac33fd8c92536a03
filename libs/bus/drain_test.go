package bus_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestDialBeforeServer: Dial returns a usable handle while no server runs
// yet, and signals the first connect once one starts.
func TestDialBeforeServer(t *testing.T) {
	t.Parallel()
	low, _ := testenv.FreePortRange(t, 1)
	url := "nats://127.0.0.1:" + strconv.Itoa(low)
	nc, connected, err := bus.Dial(bus.ConnectConfig{URL: url, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond}, discard())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer nc.Close()
	select {
	case <-connected:
		t.Fatal("connected before any server ran")
	default:
	}
	if nc.IsConnected() {
		t.Fatal("IsConnected before any server ran")
	}
	testenv.NATSWith(t, natsserver.Options{Port: low})
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatal("no first connect within 10s of the server starting")
	}
	if !nc.IsConnected() {
		t.Fatal("connected signalled but not connected")
	}
}

// TestDrainFlushesAndCloses: publishes buffered when Drain starts reach
// subscribers, and Drain returns only once the connection is closed.
func TestDrainFlushesAndCloses(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	sub := testenv.Conn(t, srv)
	got, err := sub.SubscribeSync("drain.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, err := bus.Connect(t.Context(), bus.ConnectConfig{URL: srv.ClientURL()}, discard())
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	const n = 1000
	for i := range n {
		if err := nc.Publish("drain.test", []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := bus.Drain(ctx, nc); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if !nc.IsClosed() {
		t.Fatal("Drain returned with the connection open")
	}
	for i := range n {
		if _, err := got.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("message %d of %d not delivered: %v", i, n, err)
		}
	}
	if err := bus.Drain(ctx, nc); err != nil {
		t.Errorf("Drain of a closed connection = %v, want nil", err)
	}
}

// TestDrainReconnecting: a connection that lost its server cannot drain;
// Drain closes it and says so instead of waiting.
func TestDrainReconnecting(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	nc, err := bus.Connect(t.Context(), bus.ConnectConfig{URL: srv.ClientURL()}, discard())
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	srv.Shutdown()
	testenv.Eventually(t, 10*time.Second, func() error {
		if nc.IsConnected() {
			return errors.New("still connected")
		}
		return nil
	})
	if err := bus.Drain(t.Context(), nc); err == nil {
		t.Error("Drain while reconnecting = nil, want an error")
	}
	if !nc.IsClosed() {
		t.Error("connection left open")
	}
}
