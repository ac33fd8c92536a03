package telemetry

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	prometheusbridge "go.opentelemetry.io/contrib/bridges/prometheus"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// fileHeaders says how Setup builds a signal's OTLP exporter whose headers
// come from a file: as autoexport would from the environment (the same
// protocol, and for metrics the same OTEL_METRICS_PRODUCERS), plus the
// file's headers, which replace any the environment gives, as a signal's
// own headers replace the general ones in the SDK. The zero value leaves
// the exporter to autoexport.
type fileHeaders struct {
	path      string // the headers file; "" for none
	protocol  string // ProtocolGRPC or ProtocolHTTPProtobuf
	producers string // metrics: OTEL_METRICS_PRODUCERS as checked by checkMetricsEnv
}

// signalHeaders returns the fileHeaders of a signal exported through
// exporter (the value of its *_EXPORTER variable, "" when unset) whose
// own headers are own and general ones general: the signal's own headers
// (a variable or a file) replace the general ones, as the SDK has it.
// protocol is the signal's protocol variable's value, else the general
// one's ("" for unset).
func signalHeaders(exporter string, own, general headersSource, protocol string) fileHeaders {
	src := general
	if own.set {
		src = own
	}
	if src.file == "" || (exporter != "" && exporter != ExporterOTLP) {
		return fileHeaders{}
	}
	if protocol == "" {
		protocol = ProtocolHTTPProtobuf // the specification's default, as autoexport's
	}
	return fileHeaders{path: src.file, protocol: protocol}
}

// headersSource is where the headers of one level (general or a signal's)
// come from: set when the variable or its file is, file when the file is.
type headersSource struct {
	set  bool
	file string
}

// checkHeaders records a headers variable, or the file of its _FILE
// variant, that is not a comma-separated list of key=value pairs with HTTP
// token keys (the SDK drops any other key) and URL-encoded values, and
// returns where the headers come from. The file is read as every secret
// file is (trailing line breaks dropped, the rest printable; setting both
// the variable and the file is refused).
func checkHeaders(l *envconfig.Loader, name string) headersSource {
	v := l.String(name, "")
	file := l.SecretPath(name)
	bad := name
	if file != "" {
		v, bad = l.Secret(name).Reveal(), name+envconfig.FileSuffix
	}
	if v != "" && badPair(v) != "" {
		// Not shown: the value holds credentials (an authorization
		// header), and a malformed one may hold them anywhere.
		got := "a malformed value (not shown)"
		if file != "" {
			got = file + " (malformed, not shown)"
		}
		l.Invalid(bad, `comma-separated key=value pairs, values URL-encoded (e.g. "x-tenant=a,x-team=b%20c")`, got, nil)
	}
	return headersSource{set: v != "" || file != "", file: file}
}

// readHeaders reads the headers file at path into the map the SDK would
// make of the same text in its variable: keys and values trimmed, values
// URL-decoded. A file that no longer holds well-formed headers is an
// error, where the SDK would drop the bad entries.
func readHeaders(path string) (map[string]string, error) {
	v, err := envconfig.ReadSecretFile(path)
	if err != nil {
		return nil, fmt.Errorf("otlp headers: %w", err)
	}
	if badPair(v.Reveal()) != "" {
		return nil, fmt.Errorf("otlp headers file %s: want comma-separated key=value pairs, values URL-encoded (not shown)", path)
	}
	headers := map[string]string{}
	for pair := range strings.SplitSeq(v.Reveal(), ",") {
		key, value, _ := strings.Cut(pair, "=")
		decoded, _ := url.PathUnescape(value) // badPair checked that it decodes
		headers[strings.TrimSpace(key)] = strings.TrimSpace(decoded)
	}
	return headers, nil
}

// newSpanExporter returns autoexport's span exporter, or, for headers from
// a file (h.path), the OTLP exporter autoexport would build with them.
func newSpanExporter(ctx context.Context, h fileHeaders) (sdktrace.SpanExporter, error) {
	if h.path == "" {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("autoexport: %w", err)
		}
		return exp, nil
	}
	headers, err := readHeaders(h.path)
	if err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	if h.protocol == ProtocolGRPC {
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithHeaders(headers))
	} else {
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithHeaders(headers))
	}
	if err != nil {
		return nil, fmt.Errorf("otlp %s span exporter: %w", h.protocol, err)
	}
	return exp, nil
}

// newMetricReader returns autoexport's metric reader, or, for headers from
// a file (h.path), the periodic OTLP reader autoexport would build with
// them, OTEL_METRICS_PRODUCERS' producers included.
func newMetricReader(ctx context.Context, h fileHeaders) (sdkmetric.Reader, error) {
	if h.path == "" {
		r, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return nil, fmt.Errorf("autoexport: %w", err)
		}
		return r, nil
	}
	headers, err := readHeaders(h.path)
	if err != nil {
		return nil, err
	}
	var exp sdkmetric.Exporter
	if h.protocol == ProtocolGRPC {
		exp, err = otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithHeaders(headers))
	} else {
		exp, err = otlpmetrichttp.New(ctx, otlpmetrichttp.WithHeaders(headers))
	}
	if err != nil {
		return nil, fmt.Errorf("otlp %s metric exporter: %w", h.protocol, err)
	}
	var opts []sdkmetric.PeriodicReaderOption
	// checkMetricsEnv let through prometheus and none only; none adds
	// nothing, as autoexport's no-op producer produces nothing.
	if slices.Contains(strings.Split(h.producers, ","), "prometheus") {
		opts = append(opts, sdkmetric.WithProducer(prometheusbridge.NewMetricProducer()))
	}
	return sdkmetric.NewPeriodicReader(exp, opts...), nil
}
