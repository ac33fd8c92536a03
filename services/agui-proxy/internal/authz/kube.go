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
}

type kubeAuthority struct {
	client    kubernetes.Interface
	defaultNS string
}

// NewKube returns an Authorizer that asks Kubernetes with a
// SubjectAccessReview whether the principal may get (reads) or update
// (runs, interrupts) the session's AgenticSession in its project's
// namespace. It returns ErrInvalidConfig without a client.
func NewKube(k KubeConfig, cfg Config) (*Authorizer, error) {
	if k.Client == nil {
		return nil, fmt.Errorf("%w: no kubernetes client", ErrInvalidConfig)
	}
	return newAuthorizer(ModeKube, &kubeAuthority{client: k.Client, defaultNS: k.DefaultNamespace}, cfg)
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
// with this project's kubelabel.ProjectKey. It returns a denial reason when
// there is none or more than one.
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
	// Limit 2: one is the answer, a second makes it ambiguous.
	list, err := a.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: sel, Limit: 2})
	if err != nil {
		return "", "", fmt.Errorf("%w: list namespaces: %w", ErrUnavailable, err)
	}
	switch len(list.Items) {
	case 0:
		return "", fmt.Sprintf("project %q has no namespace", projectID), nil
	case 1:
		return list.Items[0].Name, "", nil
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
