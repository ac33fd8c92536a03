package metrics_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
)

// TestRecordedThroughOTel: every method lands on an OTel instrument (so
// it reaches OTLP as well as /metrics) with its attributes.
func TestRecordedThroughOTel(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := metrics.New(mp.Meter("kube-reconciler"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	m.Observe(ctx, "sessions", metrics.ResultOK, 3*time.Millisecond)
	m.Observe(ctx, "sessions", metrics.ResultOK, 5*time.Millisecond)
	m.Reject(ctx, "projects", "namespace_denied")
	m.Pruned(ctx, 2)
	m.Pruned(ctx, 0)
	m.StatusWrite(ctx, metrics.ResultError)
	m.StatusUnchanged(ctx)
	m.ResyncRun(ctx, metrics.RunOK)
	m.ResyncObject(ctx, "sessions", metrics.ResultUnchanged)
	m.ResyncOrphans(ctx, metrics.KindRoleBindings, 3)
	if err := metrics.RegisterMemoryGauges(mp.Meter("kube-reconciler"), func() int { return 4 }, func() int { return 5 }); err != nil {
		t.Fatal(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			switch d := md.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					got[md.Name+"{"+p.Attributes.Encoded(attribute.DefaultEncoder())+"}"] += p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					got[md.Name] = p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					got[md.Name+"{"+p.Attributes.Encoded(attribute.DefaultEncoder())+"}"] += int64(p.Count)
				}
			}
		}
	}
	want := map[string]int64{
		"ambient_kube_reconciler.reconciles{resource=sessions,result=ok}":             2,
		"ambient_kube_reconciler.reconcile.duration{resource=sessions}":               2,
		"ambient_kube_reconciler.rejected{reason=namespace_denied,resource=projects}": 1,
		"ambient_kube_reconciler.rolebindings.pruned{}":                               2,
		"ambient_kube_reconciler.status.writes{result=error}":                         1,
		"ambient_kube_reconciler.status.unchanged{}":                                  1,
		"ambient_kube_reconciler.resync.runs{result=ok}":                              1,
		"ambient_kube_reconciler.resync.objects{resource=sessions,result=unchanged}":  1,
		"ambient_kube_reconciler.resync.orphans.deleted{kind=rolebindings}":           3,
		"ambient_kube_reconciler.status.cached_sessions":                              4,
		"ambient_kube_reconciler.recently_handled_objects":                            5,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
	if got["ambient_kube_reconciler.resync.last_success.timestamp"] < time.Now().Add(-time.Minute).Unix() {
		t.Errorf("last resync success not set by an ok pass: %d", got["ambient_kube_reconciler.resync.last_success.timestamp"])
	}
}

// TestRejectReasonsDocumented: the reasons of
// ambient_kube_reconciler_rejected_total are a fixed set of constants, and
// its row in docs/operations.md#metrics lists exactly those (each as
// reason="..."), so an operator can tell every rejection apart and an
// alert on one reason does not miss a renamed one.
func TestRejectReasonsDocumented(t *testing.T) {
	t.Parallel()
	doc, err := testenv.ReadMetricsDoc("../../../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	documented, err := doc.Metrics("kube-reconciler")
	if err != nil {
		t.Fatal(err)
	}
	const name = "ambient_kube_reconciler_rejected_total"
	row, ok := documented[name]
	if !ok {
		t.Fatalf("docs/operations.md#metrics has no row %s", name)
	}
	want := slices.Sorted(slices.Values(metrics.RejectReasons()))
	if got := row.Values("reason"); !slices.Equal(got, want) {
		t.Errorf("docs/operations.md#metrics lists the reasons of %s as %q; the code's are %q", name, got, want)
	}
}
