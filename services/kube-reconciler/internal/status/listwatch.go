package status

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
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
	return cache.ToListWatcherWithWatchListSemantics(
		kubewatch.ListWatch(res.List, res.Watch, func(o *metav1.ListOptions) { o.LabelSelector = selector }, b), client)
}
