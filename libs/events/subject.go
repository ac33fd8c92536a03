package events

import (
	"fmt"
	"strings"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// Resource tokens as they appear in subjects, KV keys and metrics.
const (
	TokenSessions        = "sessions"
	TokenProjects        = "projects"
	TokenProjectSettings = "project_settings"
)

// ResourceToken returns the subject token of r, or "" for an unknown resource.
func ResourceToken(r eventsv1.Resource) string {
	switch r {
	case eventsv1.Resource_RESOURCE_SESSIONS:
		return TokenSessions
	case eventsv1.Resource_RESOURCE_PROJECTS:
		return TokenProjects
	case eventsv1.Resource_RESOURCE_PROJECT_SETTINGS:
		return TokenProjectSettings
	default:
		return ""
	}
}

// ParseResourceToken is the inverse of ResourceToken. It returns
// ErrUnknownResource for anything else.
func ParseResourceToken(s string) (eventsv1.Resource, error) {
	switch s {
	case TokenSessions:
		return eventsv1.Resource_RESOURCE_SESSIONS, nil
	case TokenProjects:
		return eventsv1.Resource_RESOURCE_PROJECTS, nil
	case TokenProjectSettings:
		return eventsv1.Resource_RESOURCE_PROJECT_SETTINGS, nil
	default:
		return eventsv1.Resource_RESOURCE_UNSPECIFIED, fmt.Errorf("resource %q: %w", s, ErrUnknownResource)
	}
}

// PrefixForm describes a valid subject prefix, for configuration errors.
const PrefixForm = `dot-separated subject tokens without "*", ">" or spaces`

// ValidPrefix reports whether s can prefix event and dead-letter subjects:
// one or more literal, non-empty tokens separated by '.', so that
// <s>.<resource>.<project>.<id> is a literal subject and <s>.> matches
// exactly the events below it.
func ValidPrefix(s string) bool {
	if s == "" || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	return !strings.ContainsAny(s, "*> \t\r\n")
}

// Subject returns <prefix>.<resource>.<project>.<id> with both ids as
// SubjectToken writes them: escaped, or a digest token when the escaped
// id is over MaxTokenLen bytes, so a subject is never longer than
// len(prefix)+len(resource)+3+2*MaxTokenLen whatever the API sends.
func Subject(prefix string, r eventsv1.Resource, projectID, objectID string) string {
	return prefix + "." + ResourceToken(r) + "." + SubjectToken(projectID) + "." + SubjectToken(objectID)
}

// FilterSubject matches every event of resource r under prefix.
func FilterSubject(prefix string, r eventsv1.Resource) string {
	return prefix + "." + ResourceToken(r) + ".*.*"
}

// AllSubjects matches every event under prefix.
func AllSubjects(prefix string) string { return prefix + ".>" }

// SubjectParts is a parsed event subject.
type SubjectParts struct {
	Resource  eventsv1.Resource
	ProjectID string
	ObjectID  string
	// ProjectHashed and ObjectHashed say that the token was a digest
	// token (an id over MaxTokenLen escaped): ProjectID or ObjectID is
	// then empty, and the id is only in the event itself.
	ProjectHashed bool
	ObjectHashed  bool
}

// ParseSubject splits an event subject made by Subject. It returns
// ErrBadSubject, ErrUnknownResource or ErrBadToken for anything else; a
// digest token is no error (see SubjectParts).
func ParseSubject(prefix, subject string) (SubjectParts, error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok {
		return SubjectParts{}, fmt.Errorf("subject %q lacks prefix %q: %w", subject, prefix, ErrBadSubject)
	}
	toks := strings.Split(rest, ".")
	if len(toks) != 3 {
		return SubjectParts{}, fmt.Errorf("subject %q: want 3 tokens after the prefix: %w", subject, ErrBadSubject)
	}
	r, err := ParseResourceToken(toks[0])
	if err != nil {
		return SubjectParts{}, fmt.Errorf("subject %q: %w", subject, err)
	}
	parts := SubjectParts{Resource: r, ProjectHashed: IsDigestToken(toks[1]), ObjectHashed: IsDigestToken(toks[2])}
	if !parts.ProjectHashed {
		if parts.ProjectID, err = UnescapeToken(toks[1]); err != nil {
			return SubjectParts{}, fmt.Errorf("subject %q project: %w", subject, err)
		}
	}
	if !parts.ObjectHashed {
		if parts.ObjectID, err = UnescapeToken(toks[2]); err != nil {
			return SubjectParts{}, fmt.Errorf("subject %q id: %w", subject, err)
		}
	}
	return parts, nil
}

// ObjectKey is the KV key of an object in the objects bucket:
// <resource>.<escaped id>. Unlike a subject's, its id token stays
// reversible (ParseObjectKey) and unbounded: object ids are the API's own
// (27-character KSUIDs, project names of at most 63 characters), never a
// client's string; a publisher refuses a key over MaxSubjectLen.
func ObjectKey(r eventsv1.Resource, id string) string {
	return ResourceToken(r) + "." + EscapeToken(id)
}

// ParseObjectKey is the inverse of ObjectKey.
func ParseObjectKey(key string) (eventsv1.Resource, string, error) {
	res, tok, ok := strings.Cut(key, ".")
	if !ok {
		return eventsv1.Resource_RESOURCE_UNSPECIFIED, "", fmt.Errorf("object key %q: %w", key, ErrBadSubject)
	}
	r, err := ParseResourceToken(res)
	if err != nil {
		return r, "", err
	}
	id, err := UnescapeToken(tok)
	if err != nil {
		return r, "", err
	}
	return r, id, nil
}
