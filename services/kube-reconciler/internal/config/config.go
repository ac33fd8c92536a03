// Package config loads the kube-reconciler's configuration from the
// environment. Only this package reads environment variables.
package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/reconcile"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Environment variables read by Load.
const (
	EnvSubjectPrefix    = "SUBJECT_PREFIX"
	EnvEventsStream     = "EVENTS_STREAM"
	EnvObjectsBucket    = "OBJECTS_BUCKET"
	EnvKubeconfig       = "KUBECONFIG"
	EnvKubeQPS          = "KUBE_QPS"
	EnvKubeBurst        = "KUBE_BURST"
	EnvNamespace        = "NAMESPACE"
	EnvSessionSelector  = "KUBE_SESSION_SELECTOR"
	EnvRoleAllowList    = "ROLE_ALLOW_LIST"
	EnvGroup            = "CONSUMER_GROUP"
	EnvMemberID         = "MEMBER_ID"
	EnvPartitions       = "GROUP_PARTITIONS"
	EnvMemberPartitions = "GROUP_MEMBER_PARTITIONS"
	EnvMaxDeliver       = "GROUP_MAX_DELIVER"
	EnvStatusWorkers    = "STATUS_WORKERS"
	EnvStatusResync     = "STATUS_RESYNC"
	EnvLogLevel         = "LOG_LEVEL"
	EnvMetricsAddr      = "METRICS_ADDR"
)

// Defaults (mirrored in the Helm values).
const (
	DefaultKubeQPS         = 50
	DefaultKubeBurst       = 100
	DefaultNamespace       = "ambient-code"
	DefaultSessionSelector = reconcile.SelectAll
	DefaultGroup           = "kube-reconciler"
	DefaultPartitions      = 16
	DefaultMaxDeliver      = 5
	DefaultStatusWorkers   = 2
	DefaultStatusResync    = 10 * time.Minute
	DefaultLogLevel        = "info"
	DefaultMetricsAddr     = ":9090"
)

// Config is the kube-reconciler's whole configuration. Pass it by value.
type Config struct {
	API apiclient.EnvConfig

	NATS          bus.ConnectConfig
	SubjectPrefix string
	Stream        string
	ObjectsBucket string

	// Kubeconfig is a kubeconfig path; "" means in-cluster.
	Kubeconfig string
	KubeQPS    int
	KubeBurst  int
	// Namespace holds the AgenticSessions of sessions without a project.
	Namespace       string
	SessionSelector reconcile.Selector
	RoleAllowList   []string

	Group            string
	MemberID         string
	Partitions       int
	MemberPartitions []int // canary slice; empty shares the partitions
	MaxDeliver       int

	StatusWorkers int
	StatusResync  time.Duration

	LogLevel    string
	MetricsAddr string
	// Telemetry: which signals go out, from the standard OTEL_* variables.
	Telemetry telemetry.Export
}

// FromEnv reads the process environment (see Load).
func FromEnv() (Config, error) { return Load(nil) }

// Load reads the configuration through lookup (nil: the process environment)
// and returns every problem at once, each naming its variable.
func Load(lookup envconfig.LookupFunc) (Config, error) {
	l := envconfig.New(lookup)
	c := Config{
		API:           apiclient.LoadEnv(l),
		NATS:          bus.LoadConnectConfig(l, bus.DefaultURL),
		SubjectPrefix: l.String(EnvSubjectPrefix, events.SubjectPrefix),
		Stream:        l.String(EnvEventsStream, events.StreamName),
		ObjectsBucket: l.String(EnvObjectsBucket, bus.BucketObjects),
		Kubeconfig:    l.File(EnvKubeconfig, ""),
		KubeQPS:       l.Int(EnvKubeQPS, DefaultKubeQPS, 1, 10000),
		KubeBurst:     l.Int(EnvKubeBurst, DefaultKubeBurst, 1, 10000),
		Namespace:     l.String(EnvNamespace, DefaultNamespace),
		RoleAllowList: l.List(EnvRoleAllowList, spec.DefaultRoleAllowList),
		Group:         l.String(EnvGroup, DefaultGroup),
		MemberID:      group.LoadMemberID(l, EnvMemberID),
		Partitions:    l.Int(EnvPartitions, DefaultPartitions, 1, 1024),
		MaxDeliver:    l.Int(EnvMaxDeliver, DefaultMaxDeliver, 1, 100),
		StatusWorkers: l.Int(EnvStatusWorkers, DefaultStatusWorkers, 1, 64),
		StatusResync:  l.Duration(EnvStatusResync, DefaultStatusResync),
		LogLevel:      l.Enum(EnvLogLevel, DefaultLogLevel, "debug", "info", "warn", "error"),
		MetricsAddr:   l.HostPort(EnvMetricsAddr, DefaultMetricsAddr),
		Telemetry:     telemetry.LoadEnv(l),
	}
	selector := l.String(EnvSessionSelector, DefaultSessionSelector)
	c.MemberPartitions = l.IntSet(EnvMemberPartitions, c.Partitions)

	errs := []error{l.Err()}
	bad := func(name, want, got string) {
		errs = append(errs, &envconfig.VarError{Name: name, Want: want, Got: got})
	}
	var err error
	if c.SessionSelector, err = reconcile.ParseSelector(selector); err != nil {
		bad(EnvSessionSelector, "all, none, projects=a,b or label=key=value", selector)
	}
	for _, r := range c.RoleAllowList {
		if errs := validation.IsDNS1123Subdomain(r); len(errs) > 0 {
			bad(EnvRoleAllowList, "comma-separated ClusterRole names", strings.Join(c.RoleAllowList, ","))
			break
		}
	}
	if errs := validation.IsDNS1123Label(c.Namespace); len(errs) > 0 {
		bad(EnvNamespace, "a namespace name (RFC 1123 label)", c.Namespace)
	}
	if !group.ValidName(c.Group) {
		bad(EnvGroup, `letters, digits, "-" and "_"`, c.Group)
	}
	if !group.ValidName(c.Stream) {
		bad(EnvEventsStream, `a stream name of letters, digits, "-" and "_"`, c.Stream)
	}
	if !group.ValidName(c.ObjectsBucket) {
		bad(EnvObjectsBucket, `a bucket name of letters, digits, "-" and "_"`, c.ObjectsBucket)
	}
	if c.SubjectPrefix == "" || strings.ContainsAny(c.SubjectPrefix, "*> \t") {
		bad(EnvSubjectPrefix, `dot-separated subject tokens without "*", ">" or spaces`, c.SubjectPrefix)
	}
	if c.StatusResync < time.Second {
		bad(EnvStatusResync, "a duration of at least 1s", c.StatusResync.String())
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c.NATS.Name = "kube-reconciler/" + c.MemberID
	return c, nil
}
