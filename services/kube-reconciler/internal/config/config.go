// Package config loads the kube-reconciler's configuration from the
// environment: the runtime's shared variables (service.LoadConfig), the
// consumer group's (group.LoadConfig), the API client's, and its own. Only
// this package reads environment variables; it imports no work package.
package config

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/session"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"
)

// Environment variables read by Load besides the shared ones (service.Env*,
// group.Env*, apiclient's, bus's NATS variables).
const (
	EnvObjectsBucket   = "OBJECTS_BUCKET"
	EnvKubeconfig      = "KUBECONFIG"
	EnvKubeQPS         = "KUBE_QPS"
	EnvKubeBurst       = "KUBE_BURST"
	EnvNamespace       = "NAMESPACE"
	EnvSessionSelector = "KUBE_SESSION_SELECTOR"
	EnvRoleAllowList   = "ROLE_ALLOW_LIST"
	EnvNamespaceDeny   = "NAMESPACE_DENY_LIST"
	EnvInstance        = "CONTROL_PLANE_INSTANCE"
	EnvAdoptUnlabeled  = "ADOPT_UNLABELED_OBJECTS"
	EnvStatusWorkers   = "STATUS_WORKERS"
	EnvStatusResync    = "STATUS_RESYNC"
	EnvStatusCacheSize = "STATUS_CACHE_SIZE"
	EnvResyncInterval  = "RESYNC_INTERVAL"
)

// Defaults (mirrored in the Helm values).
const (
	DefaultKubeQPS         = 50
	DefaultKubeBurst       = 100
	DefaultNamespace       = "ambient-code"
	DefaultSessionSelector = session.SelectAll
	DefaultGroup           = "kube-reconciler"
	DefaultStatusWorkers   = 2
	DefaultStatusResync    = 10 * time.Minute
	DefaultStatusCacheSize = 10000
	DefaultInstance        = "default"
	// DefaultResyncInterval bounds how long a lost event (a dead letter)
	// stays unrepaired: 5 minutes after the outage that lost it, at a cost
	// of one KV read per cached object per interval (see package resync).
	DefaultResyncInterval = 5 * time.Minute
)

// DefaultRoleAllowList are the ClusterRoles a group_access entry may name
// when ROLE_ALLOW_LIST is not set: the chart's project roles.
var DefaultRoleAllowList = []string{"ambient-project-admin", "ambient-project-edit", "ambient-project-view"}

// DefaultNamespaceDenyList are the namespaces no project may have when
// NAMESPACE_DENY_LIST is not set: the cluster's own. The chart adds its
// release namespace; NAMESPACE is always denied besides.
var DefaultNamespaceDenyList = []string{"kube-*", "default", "openshift*"}

// Config is the kube-reconciler's whole configuration. Pass it by value.
type Config struct {
	// Config holds NATS, LOG_LEVEL, METRICS_ADDR and the OTLP endpoint.
	service.Config
	API apiclient.EnvConfig
	// Group is this replica as a consumer-group member of the events
	// (EVENTS_STREAM, SUBJECT_PREFIX, CONSUMER_GROUP, MEMBER_ID, GROUP_*,
	// MEMBER_TTL), every resource.
	Group         group.Config
	ObjectsBucket string

	// Kubeconfig is a kubeconfig path; "" means in-cluster.
	Kubeconfig string
	KubeQPS    int
	KubeBurst  int
	// Namespace holds the AgenticSessions of sessions without a project.
	Namespace       string
	SessionSelector session.Selector
	RoleAllowList   []string
	// Instance names this installation on the AgenticSessions and
	// RoleBindings it writes (label ambient-code.io/instance), so the resync
	// deletes orphans only among its own when several share a cluster.
	Instance string
	// AdoptUnlabeled makes the resync count the managed AgenticSessions and
	// RoleBindings without an instance label (written before it existed)
	// as this installation's. Default: on for DefaultInstance only.
	AdoptUnlabeled bool
	// NamespaceDenyList are path.Match patterns of namespaces no project may
	// have, whether they exist or not.
	NamespaceDenyList []string

	StatusWorkers   int
	StatusResync    time.Duration
	StatusCacheSize int
	// ResyncInterval is the period of the level-triggered resync of every
	// cached object (jittered +/-10%).
	ResyncInterval time.Duration
}

// FromEnv reads the process environment (see Load).
func FromEnv() (Config, error) { return Load(nil) }

// Load reads the configuration through lookup (nil: the process environment)
// and returns every problem at once, each naming its variable.
func Load(lookup envconfig.LookupFunc) (Config, error) {
	l := envconfig.New(lookup)
	c := Config{
		Config:            service.LoadConfig(l, service.Config{}),
		API:               apiclient.LoadEnv(l),
		Group:             group.LoadConfig(l, group.Config{Group: DefaultGroup}),
		Kubeconfig:        l.File(EnvKubeconfig, ""),
		KubeQPS:           l.Int(EnvKubeQPS, DefaultKubeQPS, 1, 10000),
		KubeBurst:         l.Int(EnvKubeBurst, DefaultKubeBurst, 1, 10000),
		Namespace:         l.String(EnvNamespace, DefaultNamespace),
		Instance:          l.String(EnvInstance, DefaultInstance),
		RoleAllowList:     l.List(EnvRoleAllowList, DefaultRoleAllowList),
		NamespaceDenyList: l.List(EnvNamespaceDeny, DefaultNamespaceDenyList),
		StatusWorkers:     l.Int(EnvStatusWorkers, DefaultStatusWorkers, 1, 64),
		StatusResync:      l.Duration(EnvStatusResync, DefaultStatusResync),
		StatusCacheSize:   l.Int(EnvStatusCacheSize, DefaultStatusCacheSize, 1, 10_000_000),
		ResyncInterval:    l.Duration(EnvResyncInterval, DefaultResyncInterval),
	}
	// The cache of the informer whose events this reads: a kube-reconciler
	// pointed at a shadow stream must not reconcile the live cache.
	c.ObjectsBucket = l.String(EnvObjectsBucket, bus.ObjectsBucketFor(c.Group.Stream))
	c.AdoptUnlabeled = l.Bool(EnvAdoptUnlabeled, c.Instance == DefaultInstance)
	selector := l.String(EnvSessionSelector, DefaultSessionSelector)
	var err error
	if c.SessionSelector, err = session.ParseSelector(selector); err != nil {
		l.Invalid(EnvSessionSelector, "all, none, projects=a,b or label=key=value", selector, nil)
	}
	for _, r := range c.RoleAllowList {
		if errs := validation.IsDNS1123Subdomain(r); len(errs) > 0 {
			l.Invalid(EnvRoleAllowList, "comma-separated ClusterRole names", strings.Join(c.RoleAllowList, ","), nil)
			break
		}
	}
	for _, p := range c.NamespaceDenyList {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			l.Invalid(EnvNamespaceDeny, `comma-separated namespace patterns ("*", "?", "[...]")`, strings.Join(c.NamespaceDenyList, ","), nil)
			break
		}
	}
	if errs := validation.IsValidLabelValue(c.Instance); len(errs) > 0 || c.Instance == "" {
		l.Invalid(EnvInstance, "a non-empty label value (63 characters of letters, digits, '-', '_', '.')", c.Instance, nil)
	}
	if errs := validation.IsDNS1123Label(c.Namespace); len(errs) > 0 {
		l.Invalid(EnvNamespace, "a namespace name (RFC 1123 label)", c.Namespace, nil)
	}
	if e := group.ObjectsBucketError(EnvObjectsBucket, c.ObjectsBucket); e != nil {
		l.Invalid(e.Name, e.Want, e.Got, nil)
	}
	if c.Kubeconfig != "" {
		// Built now (nothing is dialled) so that a file that is no usable
		// kubeconfig stops the start naming its variable.
		if _, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
			l.Invalid(EnvKubeconfig, "a kubeconfig file with a current context", c.Kubeconfig, err)
		}
	}
	if c.StatusResync < time.Second {
		l.Invalid(EnvStatusResync, "a duration of at least 1s", c.StatusResync.String(), nil)
	}
	if c.ResyncInterval < time.Second {
		l.Invalid(EnvResyncInterval, "a duration of at least 1s", c.ResyncInterval.String(), nil)
	}
	if err := l.Err(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c.NATS.Name = "kube-reconciler/" + c.Group.Member
	return c, nil
}
