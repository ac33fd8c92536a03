package resync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"k8s.io/client-go/kubernetes/fake"
)

// downRec is orphanRec whose every object fails, as while the
// kube-apiserver or the API is down; passes counts the passes started.
type downRec struct {
	orphanRec
	passes chan struct{}
}

func (d *downRec) ResyncObject(context.Context, eventsv1.Resource, string) (string, error) {
	return metrics.ResultError, errors.New("connection refused")
}

func (d *downRec) StartPass() {
	select {
	case d.passes <- struct{}{}:
	default:
	}
}

// records decodes the JSON log lines written to logs.
func records(t *testing.T, logs *testenv.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace([]byte(logs.String())), []byte("\n")) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// TestFailedObjectsOneWarningPerPass: while every object fails (an outage),
// a pass logs one warning naming how many failed and the first, not one
// per object: a 6-minute kube-apiserver outage of the chaos suite made 871
// warnings.
func TestFailedObjectsOneWarningPerPass(t *testing.T) {
	t.Parallel()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	objects, err := bus.EnsureKV(t.Context(), js, bus.ObjectsBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	for i := range n {
		if _, err := objects.Put(t.Context(), events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, "s"+string(rune('a'+i))), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	m, err := metrics.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.Buffer
	rec := &downRec{passes: make(chan struct{}, 10)}
	r, err := New(Config{Objects: objects, Reconciler: rec, CRs: crsOf{}, Kube: fake.NewClientset(), Assignment: ownsAll{},
		Owner: spec.Owner{Instance: "logs"}, Interval: time.Hour, Metrics: m,
		Log: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	r.retry.InitialInterval = 20 * time.Millisecond
	r.retry.Reset()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.run(ctx, 0) }()
	for range 3 {
		select {
		case <-rec.passes:
		case <-time.After(30 * time.Second):
			t.Fatal("no retried pass within 30s")
		}
	}
	// The third pass has started: the first two have logged their ends.
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v", err)
	}
	var warnings, summaries, objectLines int
	for _, rec := range records(t, &logs) {
		if rec["level"] == "WARN" {
			warnings++
		}
		switch rec["msg"] {
		case "resync pass done; objects failed":
			summaries++
			if rec["failed"] != float64(n) || rec["first_failed"] == "" || rec["err"] != "connection refused" {
				t.Errorf("pass summary %v, want failed %d with a sample", rec, n)
			}
		case "resync of object failed":
			objectLines++
			if rec["level"] != "DEBUG" {
				t.Errorf("per-object failure at %v, want DEBUG", rec["level"])
			}
		}
	}
	if summaries < 2 || warnings != summaries {
		t.Fatalf("%d warnings for %d passes of %d failing objects (%d per-object lines), want one per pass", warnings, summaries, n, objectLines)
	}
}
