package crd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubewatch"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apiextlisters "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"
)

// Name is the name of the AgenticSession CRD.
const Name = spec.Resource + "." + spec.Group

// Watcher keeps the installed AgenticSession CRD in an informer cache (one
// object, selected by name, so RBAC can grant exactly that name) and prunes
// desired AgenticSessions to its schema for spec.Version.
type Watcher struct {
	log      *slog.Logger
	informer cache.SharedIndexInformer
	lister   apiextlisters.CustomResourceDefinitionLister

	mu      sync.Mutex
	current *Schema         // guarded by mu: schema of the CRD resourceVersion last read; nil before
	logged  map[string]bool // guarded by mu: dropped paths already logged for current
}

// NewWatcher returns a Watcher reading the CRD through client; Run starts it.
func NewWatcher(client clientset.Interface, log *slog.Logger) (*Watcher, error) {
	if client == nil || log == nil {
		return nil, errors.New("crd watcher: client and log are required")
	}
	// The CRD alone, by name, so RBAC can grant exactly that name; a CRD
	// change made during an apiserver outage is seen within seconds of the
	// server's return (kubewatch.NewInformer).
	crds := client.ApiextensionsV1().CustomResourceDefinitions()
	byName := fields.OneTermEqualSelector("metadata.name", Name).String()
	informer, err := kubewatch.NewInformer(log, kubewatch.Source[*apiextensionsv1.CustomResourceDefinitionList]{
		List: crds.List, Watch: crds.Watch, Tweak: func(o *metav1.ListOptions) { o.FieldSelector = byName },
		Client: client, Resource: "customresourcedefinitions",
	}, &apiextensionsv1.CustomResourceDefinition{}, cache.SharedIndexInformerOptions{Indexers: cache.Indexers{}, ObjectDescription: "customresourcedefinitions/" + Name})
	if err != nil {
		return nil, fmt.Errorf("crd watcher: %w", err)
	}
	w := &Watcher{log: log, informer: informer, lister: apiextlisters.NewCustomResourceDefinitionLister(informer.GetIndexer()), logged: map[string]bool{}}
	// The handlers only log: the schema is rebuilt lazily, when an
	// AgenticSession is pruned, from the cache the informer updated before
	// calling them. The log line also tells a reader (and the tests) that a
	// change has reached this process.
	_, err = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { w.logChange(obj, false) },
		UpdateFunc: func(oldObj, newObj any) {
			o, okO := oldObj.(*apiextensionsv1.CustomResourceDefinition)
			n, okN := newObj.(*apiextensionsv1.CustomResourceDefinition)
			if okO && okN && o.ResourceVersion != n.ResourceVersion {
				w.logChange(newObj, true)
			}
		},
		DeleteFunc: func(any) {
			w.log.Warn("agenticsession crd deleted", slog.String(logkey.Name, Name))
		},
	})
	if err != nil {
		return nil, fmt.Errorf("crd watcher: add event handler: %w", err)
	}
	return w, nil
}

func (w *Watcher) logChange(obj any, changed bool) {
	c, ok := obj.(*apiextensionsv1.CustomResourceDefinition)
	if !ok {
		return
	}
	name, rv := slog.String(logkey.Name, c.Name), slog.String(logkey.Version, c.ResourceVersion)
	if changed {
		w.log.Info("agenticsession crd changed", name, rv)
		return
	}
	w.log.Info("agenticsession crd seen", name, rv)
}

// Run runs the informer until ctx is done.
func (w *Watcher) Run(ctx context.Context) error {
	w.informer.RunWithContext(ctx)
	return nil
}

// HasSynced reports whether the CRD has been read once (found or not).
func (w *Watcher) HasSynced() bool { return w.informer.HasSynced() }

// Check is the readiness check: nil when AgenticSessions can be pruned and
// applied, otherwise why not (see Schema).
func (w *Watcher) Check(context.Context) error {
	_, err := w.Schema()
	return err
}

// Schema returns the schema of the installed CRD's spec.Version, rebuilt when
// the CRD's resourceVersion changed. It returns ErrNotSynced, ErrNotInstalled,
// ErrNotEstablished, ErrVersionNotServed or ErrNoSchema (wrapped).
func (w *Watcher) Schema() (*Schema, error) {
	if !w.informer.HasSynced() {
		return nil, ErrNotSynced
	}
	c, err := w.lister.Get(Name)
	if apierrors.IsNotFound(err) {
		return nil, ErrNotInstalled
	}
	if err != nil {
		return nil, fmt.Errorf("read crd %s: %w", Name, err)
	}
	if !established(c) {
		return nil, ErrNotEstablished
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.current != nil && w.current.ResourceVersion == c.ResourceVersion {
		return w.current, nil
	}
	s, err := FromCRD(c, spec.Version)
	if err != nil {
		return nil, err
	}
	w.current, w.logged = s, map[string]bool{}
	w.log.Info("agenticsession crd schema loaded", slog.String(logkey.Name, Name), slog.String(logkey.Version, c.ResourceVersion))
	return s, nil
}

// PruneSession removes from u, a desired AgenticSession, every field the
// installed CRD does not declare, and logs each dropped path the first time
// it is dropped under this CRD version. It returns the errors of Schema and
// leaves u unchanged then.
func (w *Watcher) PruneSession(u *unstructured.Unstructured) error {
	s, err := w.Schema()
	if err != nil {
		return err
	}
	dropped := s.Prune(u.Object)
	if len(dropped) == 0 {
		return nil
	}
	w.mu.Lock()
	var first []string
	if w.current == s { // a newer schema resets what was logged; skip the old one's news
		for _, p := range dropped {
			if !w.logged[p] {
				w.logged[p] = true
				first = append(first, p)
			}
		}
	}
	w.mu.Unlock()
	for _, p := range first {
		w.log.Warn("field not declared by the agenticsession crd, dropped", slog.String(logkey.FieldPath, p), slog.String(logkey.Version, s.ResourceVersion))
	}
	return nil
}

func established(c *apiextensionsv1.CustomResourceDefinition) bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == apiextensionsv1.Established {
			return cond.Status == apiextensionsv1.ConditionTrue
		}
	}
	return false
}
