package status

import (
	"context"
	"errors"
	"math"
	"net"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
)

// reconnectBackoff paces the list and watch calls while the kube-apiserver
// cannot be reached: 200 ms, doubling, at most 2 s apart.
//
// Why not client-go's own: the reflector backs off a failed list or watch
// from 0.8 s doubling to 30 s, with up to as much again of jitter, and the
// shared informer does not let it be set (kubernetes#136943). After an
// apiserver outage of half a minute its next try came 30-40 s after the
// apiserver was back (the chaos suite's apiserver outage: CRs created
// meanwhile waited that long for their kube_cr_uid). A call that fails
// only because the server is unreachable is retried here instead, so the
// reflector sees the outage as one slow call and relists within 2 s of the
// server's return. Every other error (410 Gone, Forbidden, ...) goes to the
// reflector as before.
var reconnectBackoff = wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: math.MaxInt32, Cap: 2 * time.Second}

// agenticSessionsListWatch lists and watches the AgenticSessions selector
// selects in every namespace, retrying calls the apiserver's absence failed
// (see reconnectBackoff).
func agenticSessionsListWatch(client dynamic.Interface, selector string, b wait.Backoff) cache.ListerWatcher {
	res := client.Resource(apply.AgenticSessionGVR).Namespace(metav1.NamespaceAll)
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return untilReachable(ctx, b, func() (runtime.Object, error) { return res.List(ctx, o) })
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return untilReachable(ctx, b, func() (watch.Interface, error) { return res.Watch(ctx, o) })
		},
	}, client)
}

// untilReachable calls call until it returns anything but an unreachable
// server's error, waiting b's steps between tries. When ctx ends first it
// returns the last result.
func untilReachable[T any](ctx context.Context, b wait.Backoff, call func() (T, error)) (T, error) {
	for {
		v, err := call()
		if err == nil || !unreachable(err) {
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

// unreachable reports whether err says the apiserver could not be reached
// or is not serving yet (starting up), as opposed to an answer.
func unreachable(err error) bool {
	var op *net.OpError
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		apierrors.IsServiceUnavailable(err) || (errors.As(err, &op) && op.Op == "dial")
}
