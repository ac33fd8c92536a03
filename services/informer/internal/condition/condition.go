// Package condition puts the reason on a session when the informer could
// not publish its state: a session larger than the event payload limit
// (NATS max_payload) reaches consumers only as a reference event without
// content (events.ErrObjectTooLarge), so the informer, the one part that
// knows, writes the condition
//
//	{"type": "EventsPublished", "status": "False", "reason": "ObjectTooLarge", ...}
//
// into the session's conditions with UpdateSessionStatus, and removes it
// once a version of the session is published complete again. It is the
// informer's only write to the API.
//
// The write is a read-modify-write of the conditions list: other writers'
// conditions are kept byte for byte. It is idempotent: Needed compares the
// published state with what the condition should be, so the echo of the
// write (another version of the same, still too large, session) writes
// nothing. Like runner-manager's and kube-reconciler's status writes it has
// no precondition, so a concurrent writer can drop it; the next change of
// the session puts it back.
package condition

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// The condition the informer owns; libs/session names it, since the
// reconcilers that read sessions from the API recognise it there
// (session.Withheld).
const (
	Type           = session.ConditionEventsPublished
	StatusFalse    = session.StatusFalse
	ReasonTooLarge = session.ReasonObjectTooLarge
)

// ErrTerminal wraps a write that can never succeed (the session is gone,
// or the API refuses the informer's token): retrying it is pointless.
var ErrTerminal = errors.New("condition write refused")

// sessionAPI is the part of the API client the writer calls.
type sessionAPI interface {
	GetSession(ctx context.Context, id string) (*ambientv1.Session, error)
	UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error)
}

// Writer writes the informer's condition on sessions. It is safe for
// concurrent use.
type Writer struct {
	api sessionAPI
	now func() time.Time
}

// New returns a Writer that calls api.
func New(api sessionAPI) *Writer { return &Writer{api: api, now: time.Now} }

// Message is the condition's message for a payload limit of limit bytes. It
// holds no size of the session on purpose: the same state must produce the
// same bytes, or writing it would change the session, and the next check
// would want to write again.
func Message(limit int64) string {
	return fmt.Sprintf("the session is larger than the event payload limit (NATS max_payload %d bytes): consumers get a reference without its state until it is made smaller", limit)
}

// condition is one entry of a session's conditions list.
type condition = session.RawCondition

// Needed reports whether s (the published state) needs a write: tooLarge
// and s lacks the condition with msg, or !tooLarge and s still has it. It
// is cheap for the common case, a session that never carried it.
func Needed(s *ambientv1.Session, tooLarge bool, msg string) bool {
	conds := s.GetConditions()
	if !strings.Contains(conds, ReasonTooLarge) {
		return tooLarge
	}
	c, ok := session.FindCondition(conds, Type)
	if !tooLarge {
		return ok
	}
	return !ok || c.Status != StatusFalse || c.Reason != ReasonTooLarge || c.Message != msg
}

// Sync makes session id carry the condition (tooLarge) or not, reading the
// session first so other conditions survive. It returns nil when nothing
// needed writing, an error wrapping ErrTerminal when the session is gone or
// the API refuses the write, and other errors for a retry.
func (w *Writer) Sync(ctx context.Context, id string, tooLarge bool, msg string) error {
	s, err := w.api.GetSession(ctx, id)
	if err != nil {
		return classify(err)
	}
	if !Needed(s, tooLarge, msg) {
		return nil
	}
	conds, err := w.merge(s.GetConditions(), tooLarge, msg)
	if err != nil {
		return fmt.Errorf("session %s conditions: %w: %w", id, ErrTerminal, err)
	}
	if _, err := w.api.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Conditions: &conds}); err != nil {
		return classify(err)
	}
	return nil
}

// merge returns conds with the informer's condition set (tooLarge) or
// removed. Entries of other types are kept as they are.
func (w *Writer) merge(conds string, tooLarge bool, msg string) (string, error) {
	var list []json.RawMessage
	if strings.TrimSpace(conds) != "" {
		if err := json.Unmarshal([]byte(conds), &list); err != nil {
			// Not a list: the informer will not overwrite what someone else
			// wrote there.
			return "", fmt.Errorf("not a JSON list: %w", err)
		}
	}
	out := make([]json.RawMessage, 0, len(list)+1)
	for _, raw := range list {
		if c, err := decode(raw); err != nil || c.Type != Type {
			out = append(out, raw)
		}
	}
	if tooLarge {
		b, err := json.Marshal(condition{
			Type: Type, Status: StatusFalse, Reason: ReasonTooLarge, Message: msg,
			LastTransitionTime: w.now().UTC().Truncate(time.Second).Format(time.RFC3339),
		})
		if err != nil {
			return "", fmt.Errorf("encode condition: %w", err)
		}
		out = append(out, b)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("encode conditions: %w", err)
	}
	return string(b), nil
}

func decode(raw json.RawMessage) (condition, error) {
	var c condition
	err := json.Unmarshal(raw, &c)
	return c, err
}

// classify marks API errors no retry can fix.
func classify(err error) error {
	switch status.Code(err) { // Code sees through wrapping
	case codes.NotFound, codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
		return fmt.Errorf("%w: %w", ErrTerminal, err)
	}
	return err
}
