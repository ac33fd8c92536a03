// Package spec computes the desired Kubernetes objects for ambient API objects:
// the Namespace of a project, the RoleBindings of project settings and the
// AgenticSession of a session. It is pure (no I/O) so every rule of the
// mapping is unit-tested and fuzzed; package apply writes the result.
//
// Every function here treats its input as untrusted: malformed JSON fields,
// invalid names and oversize values give a *FieldError naming the API field,
// never a panic.
package spec

import (
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ambient-code/control-plane/libs/kubelabel"
)

// Labels and annotations the control plane puts on everything it manages.
const (
	// LabelManaged marks objects written by the control plane ("true").
	LabelManaged = "ambient-code.io/managed"
	// LabelManagedBy names the writer; prune and the status informer select on it.
	LabelManagedBy = kubelabel.ManagedBy
	// LabelProjectID is the ambient project the object belongs to, by its
	// kubelabel.ProjectKey (the id lower-cased).
	LabelProjectID = kubelabel.ProjectID
	// LabelInstance names the control-plane installation that wrote the
	// object (CONTROL_PLANE_INSTANCE), on AgenticSessions and RoleBindings:
	// the resync deletes orphans only among its own installation's objects,
	// never another's sharing the cluster.
	LabelInstance = kubelabel.Instance
	// AnnotationSessionID maps an AgenticSession back to its ambient session. It
	// is an annotation, not a label, because session ids need not be valid
	// label values.
	AnnotationSessionID = "ambient-code.io/session-id"

	// The session fields the operator's AgenticSession CRD has no spec field
	// for, kept where the operator (or a person) can read them without a
	// schema change. See docs/architecture.md, "AgenticSession mapping".

	// AnnotationBotAccount is the session's bot_account_name.
	AnnotationBotAccount = "ambient-code.io/bot-account"
	// AnnotationResourceOverrides is the session's resource_overrides, a
	// compact JSON object.
	AnnotationResourceOverrides = "ambient-code.io/resource-overrides"
	// AnnotationRepoNames is a JSON list of the names of the session's repos
	// entries, index for index with spec.repos ("" for an unnamed entry); set
	// only when some entry has a name.
	AnnotationRepoNames = "ambient-code.io/repo-names"

	// AnnotationParentSessionID is the session's parent_session_id as the
	// session operator reads a continuation's parent: the parent's
	// AgenticSession name, under the operator's own key (outside
	// reservedPrefix). The operator passes the value on to the runner as
	// PARENT_SESSION_ID and regenerates the runner token when such a CR is
	// started again; it never looks the parent up (ambient-code/platform,
	// components/operator/internal/handlers/sessions.go). The platform's
	// backend sets it to the name it Gets the parent CR by.
	AnnotationParentSessionID = "vteam.ambient-code/parent-session-id"

	// AnnotationAppliedHash is the hash of the AgenticSession as the
	// reconciler last applied it (labels, annotations and spec it owns):
	// the periodic resync compares it with the desired object's and skips
	// the apply when they are equal.
	AnnotationAppliedHash = "ambient-code.io/applied-hash"

	// The operator's start/stop protocol (the ambient-code platform's
	// backend sets these on the CR; so does the status write-back for a
	// start or stop made through the API): AnnotationDesiredPhase "Stopped"
	// with AnnotationStopRequestedAt, or "Running" with
	// AnnotationStartRequestedAt (RFC 3339 times). The operator clears them
	// once it has acted.
	AnnotationDesiredPhase     = "ambient-code.io/desired-phase"
	AnnotationStopRequestedAt  = "ambient-code.io/stop-requested-at"
	AnnotationStartRequestedAt = "ambient-code.io/start-requested-at"

	// ManagedByValue is the value of LabelManagedBy.
	ManagedByValue = kubelabel.ManagedByValue

	// reservedPrefix is the label/annotation key prefix users may not set on
	// their sessions: those keys drive selection and pruning.
	reservedPrefix = "ambient-code.io/"
)

// ManagedSelector is the label selector matching every object the control plane
// manages.
const ManagedSelector = LabelManagedBy + "=" + ManagedByValue

// InstanceSelector is the label selector of the objects one installation
// manages (LabelInstance).
func InstanceSelector(instance string) string {
	return labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue, LabelInstance: instance}).String()
}

// Owner is the installation whose objects the resync may delete: those
// managed by the control plane and labelled with Instance and, with
// AdoptUnlabeled, those written before LabelInstance existed (one
// installation per cluster was all that worked then, so exactly one
// installation should adopt them; its next apply labels the live ones).
type Owner struct {
	Instance       string
	AdoptUnlabeled bool
}

// Owns reports whether an object labelled l belongs to o.
func (o Owner) Owns(l map[string]string) bool {
	if l[LabelManagedBy] != ManagedByValue {
		return false
	}
	got, labelled := l[LabelInstance]
	return labelled && got == o.Instance || !labelled && o.AdoptUnlabeled
}

// Selectors returns label selectors whose union is the objects o Owns (a
// selector cannot say "this instance or none").
func (o Owner) Selectors() []string {
	out := []string{InstanceSelector(o.Instance)}
	if o.AdoptUnlabeled {
		out = append(out, ManagedSelector+",!"+LabelInstance)
	}
	return out
}

// ManagedLabels returns the labels put on every managed object of a project,
// the project named by its kubelabel.ProjectKey.
func ManagedLabels(projectID string) map[string]string {
	return map[string]string{
		LabelManaged:   "true",
		LabelManagedBy: ManagedByValue,
		LabelProjectID: kubelabel.ProjectKey(projectID),
	}
}
