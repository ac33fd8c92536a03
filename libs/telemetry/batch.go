package telemetry

import (
	"fmt"
	"math"
	"strconv"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// The batching variables of the specification: the batch span processor's
// and the periodic metric reader's. The SDK reads them when [Setup] builds
// the span export and the OTLP metric push (Setup passes neither any
// option, which would override them).
const (
	EnvBSPScheduleDelay   = "OTEL_BSP_SCHEDULE_DELAY"
	EnvBSPExportTimeout   = "OTEL_BSP_EXPORT_TIMEOUT"
	EnvBSPMaxQueueSize    = "OTEL_BSP_MAX_QUEUE_SIZE"
	EnvBSPMaxBatchSize    = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
	EnvMetricExportPeriod = "OTEL_METRIC_EXPORT_INTERVAL"
	EnvMetricExportTime   = "OTEL_METRIC_EXPORT_TIMEOUT"
)

// checkBatchEnv records a batching variable that the SDK would replace by
// its default or misread, with the specification's ranges. The SDK takes
// each as written (see sdkInt), and:
//   - keeps its default for a malformed value, without a word for the
//     batch span processor's;
//   - reads a negative schedule delay as none (its timer then fires at
//     once, over and over) and a negative processor timeout as no timeout;
//   - drops every span with a queue of 0 and panics with a negative one;
//     exports span by span with a batch size of 0 and panics below;
//   - exports batches of min(512, queue) instead of a batch size above the
//     queue size;
//   - ignores a metric interval or timeout of 0 or below, logging it once:
//     a timeout of 0, no timeout for the specification, stays 30 s.
//
// A schedule delay of 0 is the specification's and is accepted: the SDK
// exports each span as it ends, its batching goroutine polling all the
// while (about half a CPU core when idle). A processor timeout of 0 is no
// timeout, as the specification says.
func checkBatchEnv(l *envconfig.Loader) {
	millis := func(minimum int) string {
		return fmt.Sprintf("milliseconds, an integer from %d to %d without spaces", minimum, maxMillis)
	}
	size := fmt.Sprintf("an integer from 1 to %d without spaces", math.MaxInt32)
	sdkInt(l, EnvBSPScheduleDelay, 0, 0, maxMillis, millis(0))
	sdkInt(l, EnvBSPExportTimeout, 0, 0, maxMillis, millis(0))
	queue, queueOK := sdkInt(l, EnvBSPMaxQueueSize, sdktrace.DefaultMaxQueueSize, 1, math.MaxInt32, size)
	if batch, ok := sdkInt(l, EnvBSPMaxBatchSize, 0, 1, math.MaxInt32, size); ok && queueOK && batch > queue {
		l.Invalid(EnvBSPMaxBatchSize, fmt.Sprintf("at most %s (%d): the SDK would export batches of %d instead",
			EnvBSPMaxQueueSize, queue, min(sdktrace.DefaultMaxExportBatchSize, queue)), strconv.Itoa(batch), nil)
	}
	sdkInt(l, EnvMetricExportPeriod, 0, 1, maxMillis, millis(1))
	sdkInt(l, EnvMetricExportTime, 0, 1, maxMillis, millis(1)+" (the SDK ignores 0)")
}
