package telemetry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// The headers files' variables, spelled out (EnvOTLPHeadersFile and the
// like) so that the tests also run against a tree that lacks them.
const (
	headersFileVar        = "OTEL_EXPORTER_OTLP_HEADERS_FILE"
	tracesHeadersFileVar  = "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE"
	metricsHeadersFileVar = "OTEL_EXPORTER_OTLP_METRICS_HEADERS_FILE"
)

// headerKeys are the request headers headersSeen keeps.
var headerKeys = []string{"authorization", "x-tenant", "x-general"}

// headersSeen is an OTLP receiver over gRPC and HTTP that keeps the
// headers (headerKeys) of the last export of each signal ("traces",
// "metrics") and the metric names it received.
type headersSeen struct {
	grpcAddr, httpURL string

	mu      sync.Mutex
	headers map[string]map[string]string // guarded by mu: by signal
	metrics []string                     // guarded by mu
}

// newHeadersSeen starts a headersSeen on loopback; it stops at test
// cleanup.
func newHeadersSeen(t *testing.T) *headersSeen {
	t.Helper()
	s := &headersSeen{headers: map[string]map[string]string{}}
	lis, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s.grpcAddr = lis.Addr().String()
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, traceHeaders{s: s})
	collectormetrics.RegisterMetricsServiceServer(gs, metricsHeaders{s: s})
	done := make(chan error, 1)
	// Owned by this helper: ends when Stop closes the listener, awaited in cleanup.
	go func() { done <- gs.Serve(lis) }()

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		if readOTLP(w, r, &collectortrace.ExportTraceServiceRequest{}) {
			s.add("traces", func(k string) string { return r.Header.Get(k) }, nil)
			writeOTLP(w, &collectortrace.ExportTraceServiceResponse{})
		}
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, r *http.Request) {
		req := &collectormetrics.ExportMetricsServiceRequest{}
		if readOTLP(w, r, req) {
			s.add("metrics", func(k string) string { return r.Header.Get(k) }, req)
			writeOTLP(w, &collectormetrics.ExportMetricsServiceResponse{})
		}
	})
	hs := httptest.NewServer(mux)
	s.httpURL = hs.URL
	t.Cleanup(func() {
		hs.Close()
		gs.Stop()
		if err := <-done; err != nil {
			t.Errorf("collector serve: %v", err)
		}
	})
	return s
}

func (s *headersSeen) add(signal string, get func(key string) string, m *collectormetrics.ExportMetricsServiceRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := map[string]string{}
	for _, k := range headerKeys {
		h[k] = get(k)
	}
	s.headers[signal] = h
	if m != nil {
		s.metrics = append(s.metrics, metricNames(m)...)
	}
}

// got returns the headers of signal's last export (nil when none came)
// and every metric name received.
func (s *headersSeen) got(signal string) (map[string]string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headers[signal], slices.Clone(s.metrics)
}

type traceHeaders struct {
	collectortrace.UnimplementedTraceServiceServer
	s *headersSeen
}

func (h traceHeaders) Export(ctx context.Context, _ *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h.s.add("traces", func(k string) string { return strings.Join(md.Get(k), ",") }, nil)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

type metricsHeaders struct {
	collectormetrics.UnimplementedMetricsServiceServer
	s *headersSeen
}

func (h metricsHeaders) Export(ctx context.Context, req *collectormetrics.ExportMetricsServiceRequest) (*collectormetrics.ExportMetricsServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h.s.add("metrics", func(k string) string { return strings.Join(md.Get(k), ",") }, req)
	return &collectormetrics.ExportMetricsServiceResponse{}, nil
}

// headersFile writes content into a new file and returns its path.
func headersFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "headers")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSetupHeadersFromFile: OTEL_EXPORTER_OTLP_HEADERS_FILE (a mounted
// Secret, in the variable's key=value form) gives the OTLP exports of
// both signals their headers over either protocol, and a signal's own file
// replaces the general headers for that signal, as a signal's own variable
// does in the SDK; the metric producers of OTEL_METRICS_PRODUCERS still
// come along. Before, the file variants were not read: the exports carried
// no credentials.
func TestSetupHeadersFromFile(t *testing.T) {
	secret := headersFile(t, "authorization=Bearer%20s3cret, x-tenant = acme\n")
	tests := []struct {
		name        string
		env         func(seen *headersSeen) map[string]string
		want        map[string]map[string]string // by signal
		wantMetrics string                       // a metric name the export must hold
	}{
		{
			name: "grpc",
			env: func(seen *headersSeen) map[string]string {
				return map[string]string{EnvOTLPEndpoint: "http://" + seen.grpcAddr, EnvOTLPProtocol: ProtocolGRPC, headersFileVar: secret}
			},
			want: map[string]map[string]string{
				"traces":  {"authorization": "Bearer s3cret", "x-tenant": "acme", "x-general": ""},
				"metrics": {"authorization": "Bearer s3cret", "x-tenant": "acme", "x-general": ""},
			},
		},
		{
			name: "http/protobuf with the prometheus producer",
			env: func(seen *headersSeen) map[string]string {
				return map[string]string{EnvOTLPEndpoint: seen.httpURL, EnvOTLPProtocol: ProtocolHTTPProtobuf, headersFileVar: secret, EnvMetricsProducers: "prometheus"}
			},
			want: map[string]map[string]string{
				"traces":  {"authorization": "Bearer s3cret", "x-tenant": "acme", "x-general": ""},
				"metrics": {"authorization": "Bearer s3cret", "x-tenant": "acme", "x-general": ""},
			},
			// From the default Prometheus registry, which only the
			// producer brings into the push.
			wantMetrics: "go_goroutines",
		},
		{
			name: "a signal's own file replaces the general variable",
			env: func(seen *headersSeen) map[string]string {
				return map[string]string{
					EnvOTLPEndpoint: seen.httpURL, "OTEL_EXPORTER_OTLP_HEADERS": "x-general=from-env",
					tracesHeadersFileVar: headersFile(t, "authorization=Bearer%20traces-only"),
				}
			},
			want: map[string]map[string]string{
				"traces":  {"authorization": "Bearer traces-only", "x-tenant": "", "x-general": ""},
				"metrics": {"authorization": "", "x-tenant": "", "x-general": "from-env"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen := newHeadersSeen(t)
			exp := setOTelEnv(t, tc.env(seen))
			p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Export: exp})
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			_, span := p.Tracer.Start(t.Context(), "op")
			span.End()
			counter, err := p.Meter.Int64Counter("test.ops")
			if err != nil {
				t.Fatal(err)
			}
			counter.Add(t.Context(), 1)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			// Shutdown flushes both signals: their exports have arrived
			// when it returns.
			if err := shutdown(ctx); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			for signal, want := range tc.want {
				got, metrics := seen.got(signal)
				if got == nil {
					t.Errorf("%s: no export arrived", signal)
					continue
				}
				for k, v := range want {
					if got[k] != v {
						t.Errorf("%s export: header %s = %q, want %q", signal, k, got[k], v)
					}
				}
				if signal == "metrics" && tc.wantMetrics != "" && !slices.Contains(metrics, tc.wantMetrics) {
					t.Errorf("metrics exports lack %s (OTEL_METRICS_PRODUCERS=prometheus): %v", tc.wantMetrics, metrics)
				}
			}
		})
	}
}

// TestLoadEnvHeadersFile: a headers file is checked at start like the
// variable, and like any secret file: unusable, malformed, or set together
// with its variable, it stops the start naming the _FILE variable, never
// showing the headers. Before, the file variants were not read at all.
func TestLoadEnvHeadersFile(t *testing.T) {
	t.Parallel()
	good := headersFile(t, "authorization=Bearer%20s3cret\n")
	tests := []struct {
		name string
		env  map[string]string
		bad  string // the variable named in the error; "" for none
	}{
		{"a file", map[string]string{EnvOTLPEndpoint: "http://c:4318", tracesHeadersFileVar: good}, ""},
		{"file and variable", map[string]string{headersFileVar: good, "OTEL_EXPORTER_OTLP_HEADERS": "x=s3cret"}, headersFileVar},
		{"missing file", map[string]string{metricsHeadersFileVar: filepath.Join(t.TempDir(), "none")}, metricsHeadersFileVar},
		{"empty file", map[string]string{headersFileVar: headersFile(t, "\n")}, headersFileVar},
		{"malformed", map[string]string{tracesHeadersFileVar: headersFile(t, "authorization: Bearer s3cret\n")}, tracesHeadersFileVar},
		{"line break inside", map[string]string{headersFileVar: headersFile(t, "a=s3cret\nb=c\n")}, headersFileVar},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := envconfig.New(envconfig.Map(tc.env))
			LoadEnv(l)
			err := l.Err()
			if tc.bad == "" {
				if err != nil {
					t.Fatalf("LoadEnv: %v", err)
				}
				return
			}
			if !errors.Is(err, envconfig.ErrInvalid) || !strings.Contains(err.Error(), tc.bad+":") {
				t.Fatalf("LoadEnv error = %v, want ErrInvalid naming %s", err, tc.bad)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q shows the headers", err)
			}
		})
	}
}
