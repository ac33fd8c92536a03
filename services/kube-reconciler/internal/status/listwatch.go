package status

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubewatch"
)

// agenticSessionsListWatch lists and watches the AgenticSessions selector
// selects in every namespace, retrying calls the apiserver's absence failed
// b's steps apart (kubewatch.ListWatch).
func agenticSessionsListWatch(client dynamic.Interface, selector string, b wait.Backoff) cache.ListerWatcher {
	res := client.Resource(apply.AgenticSessionGVR).Namespace(metav1.NamespaceAll)
	return cache.ToListWatcherWithWatchListSemantics(kubewatch.ListWatch(
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return res.List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return res.Watch(ctx, o)
		}, b), client)
}
