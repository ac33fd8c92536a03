package reconcile

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/proto"
)

// TestNewProjectBurstChecksNamespaceOnce: a burst of a new project's
// sessions, as many at once as a consumer-group member has in flight,
// checks the project's namespace with one read and one create on the real
// kube-apiserver, not one read, create and read again per session. Every
// namespace request is held until all the handlers have started, so they
// all want the namespace while the first check is on its way.
func TestNewProjectBurstChecksNamespaceOnce(t *testing.T) {
	t.Parallel()
	const n = group.DefaultMaxInFlight
	started := &startCounter{want: n, all: make(chan struct{})}
	var (
		mu    sync.Mutex
		calls = map[string]int{} // method -> namespace requests
	)
	r, _ := newReconciler(t, kv(t), func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if strings.HasPrefix(req.URL.Path, "/api/v1/namespaces") {
				mu.Lock()
				calls[req.Method]++
				mu.Unlock()
				select {
				case <-started.all:
				case <-req.Context().Done():
					return nil, req.Context().Err()
				}
			}
			return rt.RoundTrip(req)
		})
	})
	r.tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(started)).Tracer("test")
	project := fmt.Sprintf("burst-%d", time.Now().UnixNano())
	evs := make([]*eventsv1.ResourceEvent, n)
	for i := range evs {
		s := sessionAt(fmt.Sprintf("%s-s%d", project, i), "go", time.Now())
		s.ProjectId = proto.String(project)
		evs[i] = events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now())
	}
	handleAll(t, r, evs, n)
	mu.Lock()
	defer mu.Unlock()
	if calls[http.MethodGet] != 1 || calls[http.MethodPost] != 1 || len(calls) != 2 {
		t.Errorf("namespace requests for %d sessions of a new project: %v, want one GET (not found) and one POST", n, calls)
	}
}

// startCounter is a span processor that closes all once want spans have
// started: every Handle starts its span before it takes any lock.
type startCounter struct {
	want    int64
	started atomic.Int64
	all     chan struct{}
}

func (c *startCounter) OnStart(context.Context, sdktrace.ReadWriteSpan) {
	if c.started.Add(1) == c.want {
		close(c.all)
	}
}

func (c *startCounter) OnEnd(sdktrace.ReadOnlySpan)      {}
func (c *startCounter) Shutdown(context.Context) error   { return nil }
func (c *startCounter) ForceFlush(context.Context) error { return nil }
