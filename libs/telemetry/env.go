package telemetry

import (
	"cmp"
	"crypto/tls"
	"math"
	"net/url"
	"strconv"
	"strings"
	"unicode"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// The standard OpenTelemetry variables [LoadEnv] checks. The OTel SDK reads
// them again itself (through autoexport) when [Setup] builds the exporters,
// together with every other OTEL_EXPORTER_OTLP_* variable (headers,
// timeouts, compression, certificates), OTEL_BSP_* /
// OTEL_METRIC_EXPORT_* for batching, the span limits and the metric
// variables (exemplar filter, producers, OTEL_GO_X_*), exactly as the
// specification says; LoadEnv checks those too.
const (
	EnvTracesExporter      = "OTEL_TRACES_EXPORTER"
	EnvMetricsExporter     = "OTEL_METRICS_EXPORTER"
	EnvOTLPEndpoint        = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvOTLPTracesEndpoint  = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvOTLPMetricsEndpoint = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
	EnvOTLPProtocol        = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvOTLPTracesProtocol  = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	EnvOTLPMetricsProtocol = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
	EnvSDKDisabled         = "OTEL_SDK_DISABLED"
)

// The OTLP headers' file variants (envconfig.FileSuffix): the path of a
// file holding what the variable would hold (a mounted Secret), which
// keeps the credentials the headers carry out of the process environment.
// The OTel SDK reads headers from the environment only, so [Setup] builds
// an exporter whose headers come from a file itself (see fileHeaders in
// headers.go).
// The file is read when Setup builds the exporter, once: the SDK's OTLP
// exporters take their headers as a fixed map when they are built, so a
// rotated file needs a restart.
const (
	EnvOTLPHeadersFile        = "OTEL_EXPORTER_OTLP_HEADERS_FILE"
	EnvOTLPTracesHeadersFile  = "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE"
	EnvOTLPMetricsHeadersFile = "OTEL_EXPORTER_OTLP_METRICS_HEADERS_FILE"
)

// Values of the *_EXPORTER variables the SDK's autoexport understands (a
// "prometheus" metrics exporter is refused: /metrics already serves
// Prometheus on METRICS_ADDR).
const (
	ExporterOTLP    = "otlp"
	ExporterConsole = "console"
	ExporterNone    = "none"
)

// Values of the *_PROTOCOL variables (http/protobuf is the specification's
// default; the Go SDK has no http/json).
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// Export says which signals [Setup] sends out of the process; the SDK builds
// the exporters from the standard environment.
type Export struct {
	// Disabled is OTEL_SDK_DISABLED=true, and wins over Traces and
	// Metrics: the tracer provider is a no-op (spans are neither recorded
	// nor exported; a span started under an incoming trace context carries
	// that context on unchanged) and nothing is pushed over OTLP. /metrics
	// keeps serving every metric: it is the service's own interface on
	// METRICS_ADDR, which Prometheus scrapes, not an OTel export.
	Disabled bool
	// Traces: spans go to the exporter OTEL_TRACES_EXPORTER names (OTLP by
	// default). Without it spans are still recorded, so trace context
	// propagates, but nothing leaves the process.
	Traces bool
	// Metrics: metrics are also pushed to the exporter
	// OTEL_METRICS_EXPORTER names (OTLP by default), every
	// OTEL_METRIC_EXPORT_INTERVAL, next to the Prometheus /metrics.
	Metrics bool

	// tracesHeaders and metricsHeaders are set by LoadEnv when the
	// signal's OTLP headers come from a file (EnvOTLPHeadersFile and the
	// signal's own): Setup builds that exporter itself, with them.
	tracesHeaders, metricsHeaders fileHeaders
}

// LoadEnv checks the standard OTel variables through l and says which
// signals to export. With OTEL_SDK_DISABLED=true nothing is (see
// Export.Disabled); the other variables are still checked, so that
// turning the SDK back on cannot fail the next start. Otherwise a signal
// is exported when its *_EXPORTER variable names an exporter other than
// none, or, with the variable unset, when an OTLP endpoint is set for it
// (OTEL_EXPORTER_OTLP_ENDPOINT, or the signal's own endpoint). With nothing
// set nothing is exported: the specification's default would send to
// localhost:4318, which in a dev stack or a test only produces export
// errors.
//
// Problems are recorded in l, each naming its variable: an exporter other
// than otlp, console or none; a protocol other than grpc or http/protobuf
// (spelled exactly: the SDK reads the value as it is); an endpoint that is
// not an absolute http(s) URL. A bare "host:port" is refused although this
// package used to take it: the SDK would read it as a URL with scheme
// "host". OTEL_SDK_DISABLED other than true or false (any case), and the
// mistakes of the exporters' other variables, of batching, span limits,
// resource, sampler, propagators, exemplar filter, metric producers and
// the SDK's experimental metric switches (see checkSDKEnv, checkBatchEnv,
// checkLimitsEnv, checkResourceEnv, checkSamplerEnv, checkPropagatorsEnv
// and checkMetricsEnv) are refused too.
func LoadEnv(l *envconfig.Loader) Export {
	// Only "true" disables per the specification, and other SDKs read any
	// other value as false: "1" or "yes" would disable here and not there.
	disabled := l.Enum(EnvSDKDisabled, "false", "true", "false") == "true"
	traces := exporterName(l, EnvTracesExporter, ExporterOTLP, ExporterConsole, ExporterNone)
	metrics := exporterName(l, EnvMetricsExporter, ExporterOTLP, ExporterConsole, ExporterNone)
	protocol := map[string]string{}
	for _, name := range []string{EnvOTLPProtocol, EnvOTLPTracesProtocol, EnvOTLPMetricsProtocol} {
		protocol[name] = exporterName(l, name, ProtocolGRPC, ProtocolHTTPProtobuf)
	}
	headers := checkSDKEnv(l)
	checkBatchEnv(l)
	checkLimitsEnv(l)
	checkResourceEnv(l)
	checkSamplerEnv(l)
	checkPropagatorsEnv(l)
	checkMetricsEnv(l)
	endpoint := l.URL(EnvOTLPEndpoint, "", "http", "https") != nil
	tracesEndpoint := l.URL(EnvOTLPTracesEndpoint, "", "http", "https") != nil
	metricsEndpoint := l.URL(EnvOTLPMetricsEndpoint, "", "http", "https") != nil
	if disabled {
		return Export{Disabled: true}
	}
	e := Export{
		Traces:  traces != ExporterNone && (traces != "" || endpoint || tracesEndpoint),
		Metrics: metrics != ExporterNone && (metrics != "" || endpoint || metricsEndpoint),
	}
	if e.Traces {
		e.tracesHeaders = signalHeaders(traces, headers["TRACES_"], headers[""], cmp.Or(protocol[EnvOTLPTracesProtocol], protocol[EnvOTLPProtocol]))
	}
	if e.Metrics {
		e.metricsHeaders = signalHeaders(metrics, headers["METRICS_"], headers[""], cmp.Or(protocol[EnvOTLPMetricsProtocol], protocol[EnvOTLPProtocol]))
		if e.metricsHeaders.path != "" {
			e.metricsHeaders.producers = l.String(EnvMetricsProducers, "")
		}
	}
	return e
}

// exporterName returns the variable's value when it is exactly one of
// allowed, "" when it is unset, and records a problem otherwise.
func exporterName(l *envconfig.Loader, name string, allowed ...string) string {
	v := l.String(name, "")
	if v == "" {
		return ""
	}
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	l.Invalid(name, "one of "+strings.Join(allowed, "|"), v, nil)
	return ""
}

// The prefix of the OTLP exporters' variables, which the OTel SDK reads
// itself. On a bad value the SDK keeps its default (a header dropped, a
// certificate ignored, a timeout unchanged), at most logging it once:
// checkSDKEnv refuses them at start instead, with the rules of the
// OpenTelemetry specification.
const envOTLPPrefix = "OTEL_EXPORTER_OTLP_"

// maxMillis bounds the millisecond variables (about 24 days): 2^31-1, the
// specification's range for integers, which every SDK reads. The Go SDK
// takes more for some (it overflows past 2^63 ns, about 292 years).
const maxMillis = math.MaxInt32

// checkSDKEnv records every malformed variable of the OTLP exporters, in
// their general and per-signal forms, and returns where the headers of
// each form come from, by signal ("", "TRACES_", "METRICS_"). The
// exporters trim a timeout before parsing it, read 0 as no timeout, as the
// specification says, and a negative one as no timeout too (refused).
func checkSDKEnv(l *envconfig.Loader) map[string]headersSource {
	headers := map[string]headersSource{}
	for _, signal := range []string{"", "TRACES_", "METRICS_"} {
		base := envOTLPPrefix + signal
		headers[signal] = checkHeaders(l, base+"HEADERS")
		l.Int(base+"TIMEOUT", 0, 0, maxMillis)
		exporterName(l, base+"COMPRESSION", "gzip", "none")
		// The SDK ignores a CA file without a PEM certificate (TLS then
		// trusts the system roots instead) and a client certificate
		// without its key, or one its key does not match (the exporter
		// connects without one): both only show as failed exports.
		l.CAFile(base+"CERTIFICATE", "")
		checkClientCert(l, base+"CLIENT_CERTIFICATE", base+"CLIENT_KEY")
	}
	return headers
}

// sdkInt returns the variable's value when it is an integer from minimum
// to maximum written as the SDK reads it, with strconv (decimal digits and
// an optional sign, nothing else: the SDK trims no space, so " 200" would
// keep its default), and true; def and true when it is unset; def and
// false, recording the problem as want, otherwise.
func sdkInt(l *envconfig.Loader, name string, def, minimum, maximum int, want string) (int, bool) {
	v := l.String(name, "")
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < minimum || n > maximum {
		l.Invalid(name, want, v, nil)
		return def, false
	}
	return n, true
}

// checkClientCert records a client certificate and key that the SDK would
// not use: the SDK reads the two variables of one level (general or
// per-signal) as a pair and drops the pair when one is missing or they are
// not a matching PEM certificate and key.
func checkClientCert(l *envconfig.Loader, certVar, keyVar string) {
	certSet, keySet := l.String(certVar, "") != "", l.String(keyVar, "") != ""
	cert, key := l.File(certVar, ""), l.File(keyVar, "")
	switch {
	case certSet && !keySet:
		l.Invalid(keyVar, "set together with "+certVar, "unset", nil)
	case keySet && !certSet:
		l.Invalid(certVar, "set together with "+keyVar, "unset", nil)
	case cert != "" && key != "":
		// The error says what is wrong (no PEM data, a key that does not
		// match) without any of the key's bytes.
		if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
			l.Invalid(certVar, "a PEM certificate matching the key in "+keyVar, cert, err)
		}
	}
}

// badPair returns the first entry of a comma-separated key=value list (the
// form of the headers and of OTEL_RESOURCE_ATTRIBUTES) whose key is not a
// token or whose value does not URL-decode, "" when every entry is well
// formed. An empty entry (a trailing comma) is bad: it has no "=".
func badPair(v string) string {
	for _, pair := range strings.Split(v, ",") {
		key, value, ok := strings.Cut(pair, "=")
		_, err := url.PathUnescape(strings.TrimSpace(value))
		if !ok || !isToken(strings.TrimSpace(key)) || err != nil {
			if pair == "" {
				return "an empty entry"
			}
			return pair
		}
	}
	return ""
}

// isToken reports whether s is a non-empty HTTP token (RFC 9110), the only
// header names the SDK keeps.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c > unicode.MaxASCII || !(unicode.IsLetter(c) || unicode.IsDigit(c) || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}
