// Package tally counts ResourceEvents per resource and type: the original
// control plane's "test" mode as a service. Smoke tests read its /tally, and
// a tally of a shadow informer's stream next to one of the live stream
// compares a canary informer with the stable one.
//
// Delivery from a consumer group is at least once, so events are counted
// once per stream message, told apart by its Nats-Msg-Id (the body's
// event_id for a message without one); redeliveries are counted
// separately.
package tally

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// Counts is the tally of one resource.
type Counts struct {
	Added    int `json:"added"`
	Modified int `json:"modified"`
	Deleted  int `json:"deleted"`
	// IDs is the number of distinct object ids seen.
	IDs int `json:"ids"`
	// LastEvent is when the last event of this resource was counted.
	LastEvent time.Time `json:"last_event_time,omitzero"`
	// SeenIDs lists the object ids, sorted, when asked for.
	SeenIDs []string `json:"seen_ids,omitempty"`
	// DeletedIDs lists the ids a DELETED event was counted for, sorted,
	// when asked for: Deleted counts events, and a repeated delete of one
	// object (a new leader announcing it again) would hide another's
	// missing one.
	DeletedIDs []string `json:"deleted_ids,omitempty"`
}

// Snapshot is the whole tally at one moment.
type Snapshot struct {
	// Resources is keyed by resource token (sessions, projects, project_settings).
	Resources map[string]Counts `json:"resources"`
	// Events counts distinct events; Redeliveries the deliveries of events
	// already counted.
	Events       int       `json:"events"`
	Redeliveries int       `json:"redeliveries"`
	LastEvent    time.Time `json:"last_event_time,omitzero"`
}

type resourceTally struct {
	counts  [4]int // by eventsv1.EventType
	ids     map[string]struct{}
	deleted map[string]struct{}
	last    time.Time
}

// Tally counts events. It is safe for concurrent use.
type Tally struct {
	now func() time.Time

	mu        sync.Mutex
	resources map[eventsv1.Resource]*resourceTally // guarded by mu
	seen      map[string]struct{}                  // guarded by mu; message (or event) ids
	redeliver int                                  // guarded by mu
	last      time.Time                            // guarded by mu
}

// New returns an empty Tally.
func New() *Tally {
	return &Tally{now: time.Now, resources: map[eventsv1.Resource]*resourceTally{}, seen: map[string]struct{}{}}
}

// Add counts ev once per event id and reports whether it was new; see
// AddMsg for an event that came as a message.
func (t *Tally) Add(ev *eventsv1.ResourceEvent) bool { return t.AddMsg(ev, "") }

// AddMsg counts ev, delivered in the message whose Nats-Msg-Id is msgID,
// once per msgID ("": once per event id) and reports whether it was new.
//
// Why the message id first: the informer publishes a state that comes
// back (v1, v2, v1 again: a restore, a rollback) as a new message whose
// id carries the expected subject sequence, with the event id of the
// first v1 in its body. Keyed on the event id, the third message was
// taken for a redelivery of the first and not counted, although the
// stream holds three events. A redelivery is the same message, so its
// id is the same.
func (t *Tally) AddMsg(ev *eventsv1.ResourceEvent, msgID string) bool {
	id := msgID
	if id == "" {
		id = ev.GetEventId()
	}
	if id == "" {
		id = events.MsgID(ev)
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.seen[id]; dup {
		t.redeliver++
		return false
	}
	t.seen[id] = struct{}{}
	r, ok := t.resources[ev.GetResource()]
	if !ok {
		r = &resourceTally{ids: map[string]struct{}{}, deleted: map[string]struct{}{}}
		t.resources[ev.GetResource()] = r
	}
	if typ := ev.GetType(); typ > 0 && int(typ) < len(r.counts) {
		r.counts[typ]++
	}
	r.ids[ev.GetObjectId()] = struct{}{}
	if ev.GetType() == eventsv1.EventType_EVENT_TYPE_DELETED {
		r.deleted[ev.GetObjectId()] = struct{}{}
	}
	// The clock is read before the lock, so a concurrent Add (the group
	// runs many lanes) may count after one that read it later: the last
	// event's time only moves forward.
	if now.After(r.last) {
		r.last = now
	}
	if now.After(t.last) {
		t.last = now
	}
	return true
}

// Handle is a group.Handler that counts every delivered event; it never
// fails, so nothing is retried or dead-lettered.
func (t *Tally) Handle(_ context.Context, m group.Message) error {
	t.AddMsg(m.Event, m.Header.Get(events.HeaderMsgID))
	return nil
}

var _ group.Handler = (*Tally)(nil).Handle

// Snapshot returns the current tally; withIDs adds the sorted id lists.
func (t *Tally) Snapshot(withIDs bool) Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Snapshot{Resources: map[string]Counts{}, Events: len(t.seen), Redeliveries: t.redeliver, LastEvent: t.last}
	for _, res := range events.Resources {
		r, ok := t.resources[res]
		c := Counts{}
		if ok {
			c = Counts{
				Added:     r.counts[eventsv1.EventType_EVENT_TYPE_ADDED],
				Modified:  r.counts[eventsv1.EventType_EVENT_TYPE_MODIFIED],
				Deleted:   r.counts[eventsv1.EventType_EVENT_TYPE_DELETED],
				IDs:       len(r.ids),
				LastEvent: r.last,
			}
			if withIDs {
				c.SeenIDs, c.DeletedIDs = sortedKeys(r.ids), sortedKeys(r.deleted)
			}
		}
		s.Resources[events.ResourceToken(res)] = c
	}
	return s
}

// ServeHTTP serves the snapshot as JSON; "?ids=true" adds the id lists.
func (t *Tally) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	withIDs := r.URL.Query().Get("ids") == "true"
	w.Header().Set("Content-Type", "application/json")
	// The client may be gone; there is nothing else to do with the error.
	_ = json.NewEncoder(w).Encode(t.Snapshot(withIDs))
}

func sortedKeys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
