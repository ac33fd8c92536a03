// Package kubewatch keeps kube-reconciler's informers listing and watching
// through a kube-apiserver outage, and logs what their reflectors could not
// do through the service's own logger.
//
// client-go's reflector backs a failed list or watch off from 0.8 s,
// doubling to 30 s, with up to as much again of jitter, and a shared
// informer does not let that be set (kubernetes#136943). After an outage of
// half a minute its next try came 30-40 s after the apiserver was back (the
// chaos suite's apiserver outage: CRs created meanwhile waited that long for
// their kube_cr_uid). ListWatch retries a call that failed only because the
// server was unreachable at its own pace instead (Backoff), so the reflector
// sees the outage as one slow call and lists again within 2 s of the
// server's return. Every answer of the server (410 Gone, 403, 429, ...)
// still goes to the reflector, which handles it as before.
package kubewatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// Backoff paces the list and watch calls while the kube-apiserver cannot be
// reached: 200 ms, doubling, at most 2 s apart, for as long as it takes.
func Backoff() wait.Backoff {
	return wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: math.MaxInt32, Cap: 2 * time.Second}
}

// ListWatch returns a ListWatch of list and watch, a client's List and
// Watch, whose calls get the reflector's options changed by tweak (a
// selector) and are retried, b's steps apart, for as long as they fail only
// because the apiserver is unreachable (see the package doc). Each call
// starts b afresh.
func ListWatch[L runtime.Object](list func(context.Context, metav1.ListOptions) (L, error), watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
	tweak func(*metav1.ListOptions), b wait.Backoff,
) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			tweak(&o)
			l, err := Retry(ctx, b, func() (L, error) { return list(ctx, o) })
			if err != nil {
				return nil, err // not a typed nil in a non-nil runtime.Object
			}
			return l, nil
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			tweak(&o)
			return Retry(ctx, b, func() (watch.Interface, error) { return watchFn(ctx, o) })
		},
	}
}

// Source is what an informer lists and watches: a client's List and Watch
// (of list type L), narrowed by Tweak (a selector).
type Source[L runtime.Object] struct {
	List  func(context.Context, metav1.ListOptions) (L, error)
	Watch func(context.Context, metav1.ListOptions) (watch.Interface, error)
	Tweak func(*metav1.ListOptions)
	// Client is the client List and Watch belong to: the informer streams
	// its initial list (watch-list) only if Client says it can
	// (cache.ToListWatcherWithWatchListSemantics).
	Client any
	// Resource names the resource in the log lines of LogErrors.
	Resource string
}

// NewInformer returns a shared informer of the objects (like example) that
// src lists and watches, built the one way every kube-reconciler informer
// should be: its calls ride out an unreachable apiserver at Backoff's pace
// (ListWatch), and its reflector's failures go to log (LogErrors), not to
// klog's stderr. opts are the informer's own (indexers, resync, object
// description).
func NewInformer[L runtime.Object](log *slog.Logger, src Source[L], example runtime.Object, opts cache.SharedIndexInformerOptions) (cache.SharedIndexInformer, error) {
	lw := cache.ToListWatcherWithWatchListSemantics(ListWatch(src.List, src.Watch, src.Tweak, Backoff()), src.Client)
	informer := cache.NewSharedIndexInformerWithOptions(lw, example, opts)
	if err := informer.SetWatchErrorHandlerWithContext(LogErrors(log, src.Resource)); err != nil {
		return nil, fmt.Errorf("informer of %s: set watch error handler: %w", src.Resource, err)
	}
	return informer, nil
}

// Retry calls call until it returns anything but an unreachable server's
// error (Unreachable), waiting b's steps between tries. When ctx ends first
// it returns the last result.
func Retry[T any](ctx context.Context, b wait.Backoff, call func() (T, error)) (T, error) {
	for {
		v, err := call()
		if err == nil || !Unreachable(err) {
			return v, err
		}
		t := time.NewTimer(b.Step())
		select {
		case <-ctx.Done():
			t.Stop()
			return v, err
		case <-t.C:
		}
	}
}

// Unreachable reports whether err says the apiserver could not be reached
// or is not serving yet (starting up), as opposed to an answer.
func Unreachable(err error) bool {
	var op *net.OpError
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		apierrors.IsServiceUnavailable(err) || (errors.As(err, &op) && op.Op == "dial")
}

// FailedMsg is the message LogErrors logs a failed list or watch with.
const FailedMsg = "kubernetes list or watch failed, retrying"

// LogErrors returns a watch error handler for an informer of resource that
// logs to log, where client-go's default handler would write to klog's
// stderr in klog's format. Like the default it says nothing of a watch the
// server closed normally and little of one cut short or expired: the
// reflector lists or watches again by itself.
func LogErrors(log *slog.Logger, resource string) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, _ *cache.Reflector, err error) {
		res, e := slog.String(logkey.Resource, resource), slog.Any(logkey.Err, err)
		switch {
		case errors.Is(err, io.EOF):
		case errors.Is(err, io.ErrUnexpectedEOF), apierrors.IsResourceExpired(err), apierrors.IsGone(err):
			log.DebugContext(ctx, "kubernetes watch ended, watching again", res, e)
		default:
			log.WarnContext(ctx, FailedMsg, res, e)
		}
	}
}
