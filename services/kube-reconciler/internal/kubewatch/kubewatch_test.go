package kubewatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/testenv"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// fastBackoff keeps the retry tests short; the pacing is not what they test.
var fastBackoff = wait.Backoff{Duration: time.Millisecond, Factor: 2, Steps: 100, Cap: 4 * time.Millisecond}

// TestRetryRetriesAnAbsentServer: a list or watch that fails only
// because the apiserver cannot be reached (refused, reset, a failed dial,
// 503 while it starts) is tried again until the server answers, so the
// reflector never backs off for it (see the package doc).
func TestRetryRetriesAnAbsentServer(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	absent := []error{
		fmt.Errorf("list: %w", refused),
		&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET},
		&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("i/o timeout")},
		apierrors.NewServiceUnavailable("apiserver is starting"),
	}
	calls := 0
	got, err := Retry(t.Context(), fastBackoff, func() (string, error) {
		calls++
		if calls <= len(absent) {
			return "", absent[calls-1]
		}
		return "listed", nil
	})
	if err != nil || got != "listed" || calls != len(absent)+1 {
		t.Fatalf("got %q, %v after %d calls; want the answer after %d", got, err, calls, len(absent)+1)
	}
}

// TestRetryPassesAnswers: an error the server answered with goes
// to the reflector at once, which handles it (a 410 Gone makes it relist).
func TestRetryPassesAnswers(t *testing.T) {
	t.Parallel()
	gr := schema.GroupResource{Group: "vteam.ambient-code", Resource: "agenticsessions"}
	for _, answer := range []error{
		apierrors.NewResourceExpired("too old resource version"),
		apierrors.NewForbidden(gr, "", errors.New("rbac")),
		apierrors.NewTooManyRequests("slow down", 1), // the server's own pacing: the reflector backs off
	} {
		calls := 0
		_, err := Retry(t.Context(), fastBackoff, func() (string, error) {
			calls++
			return "", answer
		})
		if !errors.Is(err, answer) || calls != 1 {
			t.Errorf("%v: got %v after %d calls, want it after 1", answer, err, calls)
		}
	}
}

// TestRetryEndsWithCtx: while the server stays away, the call ends
// with ctx and returns the last error.
func TestRetryEndsWithCtx(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	calls := 0
	_, err := Retry(ctx, fastBackoff, func() (string, error) {
		calls++
		if calls == 3 {
			cancel()
		}
		return "", refused
	})
	if !errors.Is(err, syscall.ECONNREFUSED) || calls != 3 {
		t.Fatalf("got %v after %d calls, want the refusal after 3", err, calls)
	}
}

// TestLogErrors: a failed list or watch is a warning in the service's log
// with the resource and the error; a watch the server closed is not news,
// and one cut short or expired is only debug (the reflector goes on).
func TestLogErrors(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	handle := LogErrors(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "agenticsessions")
	gr := schema.GroupResource{Group: "vteam.ambient-code", Resource: "agenticsessions"}
	for _, c := range []struct {
		err   error
		level string // "" for no line
	}{
		{io.EOF, ""},
		{io.ErrUnexpectedEOF, "DEBUG"},
		{apierrors.NewResourceExpired("too old resource version"), "DEBUG"},
		{apierrors.NewForbidden(gr, "", errors.New("rbac")), "WARN"},
	} {
		buf.Reset()
		handle(t.Context(), nil, c.err)
		if c.level == "" {
			if buf.Len() != 0 {
				t.Errorf("%v: logged %s, want nothing", c.err, buf.String())
			}
			continue
		}
		var line map[string]any
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("%v: log line %q: %v", c.err, buf.String(), err)
		}
		if line["level"] != c.level || line[logkey.Resource] != "agenticsessions" || line[logkey.Err] != c.err.Error() {
			t.Errorf("%v: logged %v, want level %s with the resource and the error", c.err, line, c.level)
		}
	}
}

// TestListWatch: both calls get the tweaked options and are retried past an
// unreachable server; a list that fails with an answer gives the reflector
// a nil object, not a nil *List inside a non-nil interface.
func TestListWatch(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	var lists, watches int
	var selectors []string
	listAnswer := error(nil)
	lw := ListWatch(
		func(_ context.Context, o metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
			lists++
			selectors = append(selectors, o.LabelSelector)
			if lists == 1 {
				return nil, refused
			}
			if listAnswer != nil {
				return nil, listAnswer
			}
			return &metav1.PartialObjectMetadataList{}, nil
		},
		func(_ context.Context, o metav1.ListOptions) (watch.Interface, error) {
			watches++
			selectors = append(selectors, o.LabelSelector)
			if watches == 1 {
				return nil, refused
			}
			return watch.NewEmptyWatch(), nil
		},
		func(o *metav1.ListOptions) { o.LabelSelector = "app=x" }, fastBackoff)
	if obj, err := lw.ListWithContext(t.Context(), metav1.ListOptions{}); err != nil || obj == nil || lists != 2 {
		t.Fatalf("list: %v, %v after %d calls; want a list after 2", obj, err, lists)
	}
	if w, err := lw.WatchWithContext(t.Context(), metav1.ListOptions{}); err != nil || w == nil || watches != 2 {
		t.Fatalf("watch: %v, %v after %d calls; want a watch after 2", w, err, watches)
	}
	if want := []string{"app=x", "app=x", "app=x", "app=x"}; !slices.Equal(selectors, want) {
		t.Errorf("options seen %v, want the tweak on every call %v", selectors, want)
	}
	listAnswer = apierrors.NewForbidden(schema.GroupResource{Resource: "x"}, "", errors.New("rbac"))
	obj, err := lw.ListWithContext(t.Context(), metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || obj != nil {
		t.Errorf("list answered 403: %#v, %v; want a nil object and the 403", obj, err)
	}
}

// TestNewInformer: an informer built by NewInformer lists past an
// unreachable server without the reflector seeing it (ListWatch), and a
// refused watch reaches the service's logger (LogErrors) before the
// reflector lists and watches again.
func TestNewInformer(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var lists, watches int
	thing := unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Thing",
		"metadata": map[string]any{"name": "a", "namespace": "ns", "resourceVersion": "1"}}}
	log := &recorder{}
	informer, err := NewInformer(slog.New(log), Source[*unstructured.UnstructuredList]{
		List: func(context.Context, metav1.ListOptions) (*unstructured.UnstructuredList, error) {
			mu.Lock()
			defer mu.Unlock()
			if lists++; lists == 1 {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
			}
			l := &unstructured.UnstructuredList{Items: []unstructured.Unstructured{thing}}
			l.SetResourceVersion("1")
			return l, nil
		},
		Watch: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			mu.Lock()
			defer mu.Unlock()
			// The first watch is the reflector's try at a streamed list,
			// which falls back to a list without telling the handler; the
			// second is the watch after that list.
			if watches++; watches <= 2 {
				return nil, apierrors.NewForbidden(schema.GroupResource{Resource: "things"}, "", errors.New("rbac"))
			}
			return watch.NewFake(), nil
		},
		Tweak:    func(*metav1.ListOptions) {},
		Resource: "things",
	}, &unstructured.Unstructured{}, cache.SharedIndexInformerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go informer.RunWithContext(t.Context())
	if !cache.WaitForCacheSync(t.Context().Done(), informer.HasSynced) {
		t.Fatal("cache not synced")
	}
	if keys := informer.GetStore().ListKeys(); !slices.Equal(keys, []string{"ns/a"}) {
		t.Errorf("cached %v, want [ns/a]", keys)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if watches < 3 {
			return fmt.Errorf("%d watches, want one more after the refusals", watches)
		}
		return nil
	})
	got := log.lines()
	// Without ListWatch's retry the unreachable server's list would be
	// logged (and the refused watch not, the reflector having gone round
	// by the streamed list); without LogErrors nothing would be.
	if want := []string{"WARN " + FailedMsg + " things things is forbidden: rbac"}; !slices.Equal(got, want) {
		t.Errorf("logged %q, want only the refused watch, as a warning naming the resource: %q", got, want)
	}
}

// recorder is a slog.Handler keeping the level, message, resource and error
// of each record, for tests of what an informer logs from its goroutines.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Level.String() + " " + rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == logkey.Resource || a.Key == logkey.Err {
			line += " " + a.Value.String()
		}
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, line)
	return nil
}

func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}
