package telemetry

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// checkLoadEnvErr runs LoadEnv on env and fails unless its error names
// exactly badVars (none: no error).
func checkLoadEnvErr(t *testing.T, env map[string]string, badVars []string) {
	t.Helper()
	l := envconfig.New(envconfig.Map(env))
	LoadEnv(l)
	err := l.Err()
	if len(badVars) == 0 {
		if err != nil {
			t.Fatalf("LoadEnv(%q) error = %v, want nil", env, err)
		}
		return
	}
	if !errors.Is(err, envconfig.ErrInvalid) {
		t.Fatalf("LoadEnv(%q) error = %v, want ErrInvalid naming %v", env, err, badVars)
	}
	for _, v := range badVars {
		if !strings.Contains(err.Error(), v+":") {
			t.Errorf("error %q does not name %s", err, v)
		}
	}
	// errors.Join puts one problem a line.
	if n := len(strings.Split(err.Error(), "\n")); n != len(badVars) {
		t.Errorf("error %q holds %d problems, want one for each of %v", err, n, badVars)
	}
}

// spanLimitVars are the span limit variables the SDK reads.
var spanLimitVars = []string{
	EnvAttributeValueLengthLimit, EnvAttributeCountLimit,
	EnvSpanAttributeValueLengthLimit, EnvSpanAttributeCountLimit,
	EnvSpanEventCountLimit, EnvSpanLinkCountLimit,
	EnvEventAttributeCountLimit, EnvLinkAttributeCountLimit,
}

// TestLoadEnvSpanLimits: each span limit takes a non-negative integer
// written as the SDK reads it (strconv.Atoi of the value as it is). The
// SDK keeps its default without a word for anything else, a value with a
// space included, and reads a negative limit as no limit at all, which
// the specification calls invalid: all refused.
func TestLoadEnvSpanLimits(t *testing.T) {
	t.Parallel()
	values := []struct {
		value string
		ok    bool
	}{
		{"0", true}, {"2", true}, {"+3", true}, {"0128", true}, {"2147483647", true},
		{"abc", false}, {"1.5", false}, {"1e3", false}, {"1_000", false},
		{" 2", false}, {"2 ", false}, {" ", false},
		{"-1", false}, {"-7", false},
		{"2147483648", false}, {"99999999999999999999", false},
	}
	for _, name := range spanLimitVars {
		for _, v := range values {
			t.Run(name+"="+v.value, func(t *testing.T) {
				t.Parallel()
				var bad []string
				if !v.ok {
					bad = []string{name}
				}
				checkLoadEnvErr(t, map[string]string{name: v.value}, bad)
			})
		}
	}
	// A malformed span limit is not replaced by the general one: the SDK
	// then uses its default, 128, not the 3 asked for.
	t.Run("malformed span limit beside a general one", func(t *testing.T) {
		t.Parallel()
		checkLoadEnvErr(t, map[string]string{EnvSpanAttributeCountLimit: "x", EnvAttributeCountLimit: "3"}, []string{EnvSpanAttributeCountLimit})
	})
}

// exportedSpan sets env, runs Setup as a service does (LoadEnv first) with
// traces exported over OTLP/HTTP, records one span through record and
// returns it as the collector received it.
func exportedSpan(t *testing.T, env map[string]string, record func(trace.Span)) *tracepb.Span {
	t.Helper()
	httpC, httpURL := newHTTPCollector(t)
	env[EnvOTLPTracesEndpoint] = httpURL + "/v1/traces"
	exp := setOTelEnv(t, env)
	p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Export: exp})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	_, span := p.Tracer.Start(t.Context(), "op")
	record(span)
	span.End()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case req := <-httpC.traces:
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					return s
				}
			}
		}
		t.Fatal("export holds no span")
	case <-time.After(10 * time.Second):
		t.Fatal("collector received no spans within 10s")
	}
	return nil
}

// TestSetupSpanLimitsFromEnvironment: a valid limit takes effect on the
// spans Setup's provider exports. The SDK reads the limits only because
// Setup sets none itself; limits set there would override them.
func TestSetupSpanLimitsFromEnvironment(t *testing.T) {
	fiveAttrs := func(s trace.Span) {
		s.SetAttributes(attribute.String("a", "abcdefgh"), attribute.Int("b", 2), attribute.Int("c", 3), attribute.Int("d", 4), attribute.Int("e", 5))
	}
	t.Run(EnvSpanAttributeCountLimit, func(t *testing.T) {
		s := exportedSpan(t, map[string]string{EnvSpanAttributeCountLimit: "2"}, fiveAttrs)
		if got, dropped := len(s.GetAttributes()), s.GetDroppedAttributesCount(); got != 2 || dropped != 3 {
			t.Errorf("span keeps %d attributes, %d dropped; want 2 and 3", got, dropped)
		}
	})
	t.Run("span limit wins over the general one", func(t *testing.T) {
		s := exportedSpan(t, map[string]string{EnvAttributeCountLimit: "3", EnvSpanAttributeCountLimit: "1"}, fiveAttrs)
		if got := len(s.GetAttributes()); got != 1 {
			t.Errorf("span keeps %d attributes, want 1", got)
		}
	})
	t.Run(EnvAttributeValueLengthLimit, func(t *testing.T) {
		s := exportedSpan(t, map[string]string{EnvAttributeValueLengthLimit: "4"}, fiveAttrs)
		for _, kv := range s.GetAttributes() {
			if kv.GetKey() == "a" && kv.GetValue().GetStringValue() != "abcd" {
				t.Errorf("attribute a = %q, want it cut to \"abcd\"", kv.GetValue().GetStringValue())
			}
		}
	})
	t.Run(EnvSpanEventCountLimit, func(t *testing.T) {
		s := exportedSpan(t, map[string]string{EnvSpanEventCountLimit: "1"}, func(s trace.Span) {
			s.AddEvent("one")
			s.AddEvent("two")
			s.AddEvent("three")
		})
		if got, dropped := len(s.GetEvents()), s.GetDroppedEventsCount(); got != 1 || dropped != 2 || s.GetEvents()[0].GetName() != "three" {
			t.Errorf("span keeps events %v, %d dropped; want [three] and 2", s.GetEvents(), dropped)
		}
	})
}
