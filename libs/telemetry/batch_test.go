package telemetry

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestLoadEnvBatch: the batch span processor's and the metric reader's
// variables take integers written as the SDK reads them (strconv of the
// value as it is, no space trimmed), in the specification's ranges. What
// the SDK would silently replace by its default, or misread, is refused.
func TestLoadEnvBatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		badVars []string
	}{
		{name: "well formed", env: map[string]string{
			EnvBSPScheduleDelay: "200", EnvBSPExportTimeout: "10000", EnvBSPMaxQueueSize: "4096", EnvBSPMaxBatchSize: "4096",
			EnvMetricExportPeriod: "+60000", EnvMetricExportTime: "2147483647",
		}},
		// 0 is no timeout, as the specification says; the schedule
		// delay 0 exports at once.
		{name: "zero delay and processor timeout", env: map[string]string{EnvBSPScheduleDelay: "0", EnvBSPExportTimeout: "0"}},
		{name: "batch within the default queue", env: map[string]string{EnvBSPMaxBatchSize: "2048"}},
		// The exporters trim the value before parsing it.
		{name: "exporter timeout with spaces", env: map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": " 5000 ", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0"}},
		// The SDK does not trim: each of these would keep its default.
		{name: "schedule delay with a space", env: map[string]string{EnvBSPScheduleDelay: " 200"}, badVars: []string{EnvBSPScheduleDelay}},
		{name: "processor timeout with a space", env: map[string]string{EnvBSPExportTimeout: "3000 "}, badVars: []string{EnvBSPExportTimeout}},
		{name: "queue size with a space", env: map[string]string{EnvBSPMaxQueueSize: "\t4096"}, badVars: []string{EnvBSPMaxQueueSize}},
		{name: "batch size only spaces", env: map[string]string{EnvBSPMaxBatchSize: "  "}, badVars: []string{EnvBSPMaxBatchSize}},
		{name: "metric interval with a space", env: map[string]string{EnvMetricExportPeriod: "500 "}, badVars: []string{EnvMetricExportPeriod}},
		{name: "metric timeout with a space", env: map[string]string{EnvMetricExportTime: " 500"}, badVars: []string{EnvMetricExportTime}},
		// The SDK would export batches of min(512, queue) instead.
		{name: "batch above the default queue", env: map[string]string{EnvBSPMaxBatchSize: "4096"}, badVars: []string{EnvBSPMaxBatchSize}},
		{name: "batch above the queue", env: map[string]string{EnvBSPMaxQueueSize: "100", EnvBSPMaxBatchSize: "200"}, badVars: []string{EnvBSPMaxBatchSize}},
		// Compared with the queue only when that is usable.
		{name: "batch beside a malformed queue", env: map[string]string{EnvBSPMaxQueueSize: "x", EnvBSPMaxBatchSize: "4096"}, badVars: []string{EnvBSPMaxQueueSize}},
		{name: "malformed", env: map[string]string{
			EnvBSPScheduleDelay: "5s", EnvBSPExportTimeout: "1.5", EnvBSPMaxQueueSize: "2k", EnvBSPMaxBatchSize: "1e3",
			EnvMetricExportPeriod: "1m", EnvMetricExportTime: "abc",
		}, badVars: []string{EnvBSPScheduleDelay, EnvBSPExportTimeout, EnvBSPMaxQueueSize, EnvBSPMaxBatchSize, EnvMetricExportPeriod, EnvMetricExportTime}},
		// Negative durations: a spinning timer and no processor timeout
		// in the SDK; sizes below 1 drop every span or panic; the metric
		// reader ignores 0 (no timeout for the specification) and below.
		{name: "negative", env: map[string]string{
			EnvBSPScheduleDelay: "-5", EnvBSPExportTimeout: "-1", EnvBSPMaxQueueSize: "-1", EnvBSPMaxBatchSize: "-1",
			EnvMetricExportPeriod: "-1", EnvMetricExportTime: "-1",
		}, badVars: []string{EnvBSPScheduleDelay, EnvBSPExportTimeout, EnvBSPMaxQueueSize, EnvBSPMaxBatchSize, EnvMetricExportPeriod, EnvMetricExportTime}},
		{name: "zero sizes and metric durations", env: map[string]string{
			EnvBSPMaxQueueSize: "0", EnvBSPMaxBatchSize: "0", EnvMetricExportPeriod: "0", EnvMetricExportTime: "0",
		}, badVars: []string{EnvBSPMaxQueueSize, EnvBSPMaxBatchSize, EnvMetricExportPeriod, EnvMetricExportTime}},
		{name: "above 2^31-1", env: map[string]string{EnvBSPScheduleDelay: "2147483648", EnvMetricExportPeriod: "9223372036855"}, badVars: []string{EnvBSPScheduleDelay, EnvMetricExportPeriod}},
		// Negative exporter timeouts mean no timeout to the exporters.
		{name: "negative exporter timeouts", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-1", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "x"}, badVars: []string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkLoadEnvErr(t, tc.env, tc.badVars)
		})
	}
}

// TestSetupBatchSizeFromEnvironment: OTEL_BSP_MAX_EXPORT_BATCH_SIZE takes
// effect on Setup's batch span processor (Setup passes it no options,
// which would override the variable): five spans leave in batches of 2, 2
// and 1 (the last at shutdown).
func TestSetupBatchSizeFromEnvironment(t *testing.T) {
	httpC, httpURL := newHTTPCollector(t)
	exp := setOTelEnv(t, map[string]string{EnvOTLPTracesEndpoint: httpURL + "/v1/traces", EnvBSPMaxBatchSize: "2"})
	p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Export: exp})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	for range 5 {
		_, span := p.Tracer.Start(t.Context(), "op")
		span.End()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	var sizes []int
	for len(sizes) < 3 {
		select {
		case req := <-httpC.traces:
			_, names := traceNames(req)
			sizes = append(sizes, len(names))
		default:
			t.Fatalf("collector received batches of %v after shutdown, want [2 2 1]", sizes)
		}
	}
	if !slices.Equal(sizes, []int{2, 2, 1}) {
		t.Errorf("batches of %v spans, want [2 2 1]", sizes)
	}
}
