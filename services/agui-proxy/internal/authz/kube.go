package authz

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/ambient-code/control-plane/libs/kubelabel"
)

// The operator's AgenticSession, the resource a SubjectAccessReview asks
// about.
const (
	sessionGroup    = "vteam.ambient-code"
	sessionResource = "agenticsessions"
)

// Kubernetes adds these to every authenticated user; user names and groups
// under "system:" are Kubernetes' own and never taken from a token.
const (
	groupAuthenticated = "system:authenticated"
	reservedPrefix     = "system:"
)

// KubeConfig says how to reach Kubernetes.
type KubeConfig struct {
	// Client creates SubjectAccessReviews and lists namespaces (the proxy's
	// ServiceAccount needs create subjectaccessreviews and list namespaces).
	Client kubernetes.Interface
	// DefaultNamespace holds the AgenticSessions of sessions without a
	// project (kube-reconciler's NAMESPACE); empty: such sessions are denied.
	DefaultNamespace string
	// Instance is this installation (kube-reconciler's
	// CONTROL_PLANE_INSTANCE): only a project namespace of this installation
	// is asked about, never another's sharing the cluster (see
	// kubelabel.NamespaceOfInstance).
	Instance string
}

type kubeAuthority struct {
	client    kubernetes.Interface
	defaultNS string
	instance  string
}

// NewKube returns an Authorizer that asks Kubernetes with a
// SubjectAccessReview whether the principal may get (reads) or update
// (runs, interrupts) the session's AgenticSession in its project's
// namespace of this installation. It returns ErrInvalidConfig without a
// client or with an Instance that is not a non-empty label value.
func NewKube(k KubeConfig, cfg Config) (*Authorizer, error) {
	if k.Client == nil {
		return nil, fmt.Errorf("%w: no kubernetes client", ErrInvalidConfig)
	}
	// An empty instance would match only namespaces labelled with an empty
	// value, which kube-reconciler never writes: every project denied.
	if errs := validation.IsValidLabelValue(k.Instance); len(errs) > 0 || k.Instance == "" {
		return nil, fmt.Errorf("%w: installation %q is not a non-empty label value", ErrInvalidConfig, k.Instance)
	}
	return newAuthorizer(ModeKube, &kubeAuthority{client: k.Client, defaultNS: k.DefaultNamespace, instance: k.Instance}, cfg)
}

// key: who (user and groups, in any order), what, and where.
func (a *kubeAuthority) key(req Request) []byte {
	groups := slices.Clone(req.Principal.Groups)
	slices.Sort(groups)
	return []byte(strings.Join([]string{req.Principal.Name, strings.Join(groups, "\x00"), req.Verb, req.ProjectID}, "\x01"))
}

func (a *kubeAuthority) decide(ctx context.Context, req Request) (Decision, error) {
	p := req.Principal
	if p.Name == "" || strings.HasPrefix(p.Name, reservedPrefix) {
		// A token naming a system user (system:admin, a ServiceAccount)
		// must not be asked about: it could be granted what the proxy's
		// caller never was.
		return Decision{Reason: fmt.Sprintf("user name %q cannot be authorized", p.Name)}, nil
	}
	groups := []string{groupAuthenticated}
	for _, g := range p.Groups {
		// system:masters in a token would be granted everything.
		if g != "" && !strings.HasPrefix(g, reservedPrefix) {
			groups = append(groups, g)
		}
	}
	ns, reason, err := a.namespace(ctx, req.ProjectID)
	if err != nil || reason != "" {
		return Decision{Reason: reason}, err
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   p.Name,
		Groups: groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Verb: req.Verb, Group: sessionGroup, Resource: sessionResource,
			// kube-reconciler names the CR after kube_cr_name, which the
			// real server sets to the session id; lower-cased like it.
			Name: strings.ToLower(req.SessionID),
		},
	}}
	got, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return Decision{}, fmt.Errorf("%w: subjectaccessreview: %w", ErrUnavailable, err)
	}
	if got.Status.Allowed {
		return Decision{Allowed: true}, nil
	}
	return Decision{Reason: fmt.Sprintf("%s may not %s session %s", p.Name, req.Verb, req.SessionID)}, nil
}

// namespace finds the project's namespace: the one namespace carrying the
// control plane's labels (package kubelabel, which kube-reconciler writes)
// with this project's kubelabel.ProjectKey and belonging to this
// installation by kube-reconciler's rule (kubelabel.NamespaceOfInstance).
// It returns a denial reason when there is none or more than one.
func (a *kubeAuthority) namespace(ctx context.Context, projectID string) (string, string, error) {
	if projectID == "" {
		if a.defaultNS == "" {
			return "", "the session has no project", nil
		}
		return a.defaultNS, "", nil
	}
	if len(validation.IsValidLabelValue(projectID)) > 0 {
		return "", fmt.Sprintf("project %q has no namespace", clip(projectID)), nil
	}
	sel := labels.Set{kubelabel.ManagedBy: kubelabel.ManagedByValue, kubelabel.ProjectID: kubelabel.ProjectKey(projectID)}.String()
	// No limit: the installation is filtered here, not by the selector (a
	// selector cannot say "this instance or none"), so another
	// installation's namespaces of the project must not use up a limit
	// before ours is seen. They are few: one per installation sharing the
	// cluster, and only cluster admins label namespaces.
	list, err := a.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return "", "", fmt.Errorf("%w: list namespaces: %w", ErrUnavailable, err)
	}
	var ours []string
	for _, ns := range list.Items {
		// Another installation's namespace of a project of the same id
		// holds its RoleBindings, which grant its groups, not ours: asking
		// there would let them reach this installation's sessions.
		if kubelabel.NamespaceOfInstance(ns.Labels, a.instance) {
			ours = append(ours, ns.Name)
		}
	}
	switch len(ours) {
	case 0:
		if len(list.Items) > 0 {
			return "", fmt.Sprintf("project %q has no namespace of this installation (%s=%s)", projectID, kubelabel.Instance, a.instance), nil
		}
		return "", fmt.Sprintf("project %q has no namespace", projectID), nil
	case 1:
		return ours[0], "", nil
	default:
		return "", fmt.Sprintf("project %q has more than one namespace", projectID), nil
	}
}

// clip shortens untrusted input quoted in a reason.
func clip(s string) string {
	const maxQuoted = 64
	if len(s) <= maxQuoted {
		return s
	}
	return s[:maxQuoted] + "..."
}
