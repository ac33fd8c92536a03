package telemetry

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// The resource variables of the specification, read by the SDK's
// environment detector (resource.WithFromEnv) when [Setup] builds the
// resource.
const (
	EnvServiceName        = "OTEL_SERVICE_NAME"
	EnvResourceAttributes = "OTEL_RESOURCE_ATTRIBUTES"
)

// checkResourceEnv records an OTEL_RESOURCE_ATTRIBUTES that is not a
// comma-separated list of key=value pairs with token keys and URL-encoded
// values. The SDK drops an entry without "=" (Setup then fails, later and
// less precisely), drops an empty key without a word and keeps a value it
// cannot decode as written, only telling the OTel error handler. Any
// OTEL_SERVICE_NAME is a valid service.name; it is read so that it is
// listed among the variables the service reads (envconfig.Loader.Names).
func checkResourceEnv(l *envconfig.Loader) {
	l.String(EnvServiceName, "") // any value is valid, see above
	v := strings.TrimSpace(l.String(EnvResourceAttributes, ""))
	if v == "" {
		return
	}
	if bad := badPair(v); bad != "" {
		l.Invalid(EnvResourceAttributes, `comma-separated key=value pairs, values URL-encoded (e.g. "deployment.environment=prod,k8s.pod.name=informer-0")`, bad, nil)
	}
}

// newResource is the resource of every span and metric: service.name and
// service.version from opts and the SDK's telemetry.sdk.* attributes,
// then those of OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, which win
// as the specification says (an operator names a deployment or a pod,
// e.g. from the Downward API, without a build). Errors wrap
// [ErrInvalidOptions] for a malformed OTEL_RESOURCE_ATTRIBUTES.
func newResource(ctx context.Context, opts Options) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{semconv.ServiceName(opts.ServiceName)}
	if opts.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(opts.Version))
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attrs...),
		// Last: the detectors merge in order, a later value replacing an
		// earlier one of the same key.
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry resource (%s, %s): %w: %w", EnvResourceAttributes, EnvServiceName, ErrInvalidOptions, err)
	}
	return res, nil
}
