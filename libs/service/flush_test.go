package service_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestRunFlushFailureIsNotACrash: a requested stop whose final telemetry
// flush fails (the collector went away before the pod) returns nil, so
// Main exits 0 and the pod does not look crashed; the lost telemetry is
// logged as an error instead.
func TestRunFlushFailureIsNotACrash(t *testing.T) {
	srv := testenv.NATS(t)
	// Nothing listens there: OTLP/HTTP fails each export at once, and the
	// metric reader's last push at shutdown returns its error.
	t.Setenv(telemetry.EnvOTLPEndpoint, "http://"+testenv.FreeAddr(t))
	t.Setenv(telemetry.EnvOTLPProtocol, telemetry.ProtocolHTTPProtobuf)
	var logs testenv.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	err := service.Run(ctx, service.Options{
		Name:   "svc-test",
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Config: service.Config{
			NATS:        bus.ConnectConfig{URL: srv.ClientURL()},
			MetricsAddr: "127.0.0.1:0",
			Telemetry:   telemetry.Export{Traces: true, Metrics: true},
		},
	}, func(_ context.Context, rt *service.Runtime) error {
		// A span waiting in the batch processor: the flush at shutdown
		// has to export it.
		_, span := rt.Telemetry().Tracer.Start(t.Context(), "work")
		span.End()
		rt.Go("stopper", func(ctx context.Context) error {
			cancel() // the SIGTERM
			<-ctx.Done()
			return nil
		})
		return nil
	})
	if err != nil {
		t.Fatalf("Run after a requested stop = %v, want nil although the telemetry flush failed", err)
	}
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"telemetry flush failed"`) {
		t.Errorf("no error log of the failed flush; logs:\n%s", logs.String())
	}
}
