package app_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/ambient-code/control-plane/libs/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, append(testenv.NATSServerLeaks(),
		// Process-wide OpenTelemetry and gRPC internals live for the process.
		goleak.IgnoreAnyFunction("go.opentelemetry.io/otel/sdk/trace.(*batchSpanProcessor).processQueue"),
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)...)
}
