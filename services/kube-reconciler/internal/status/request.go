package status

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// A user starts or stops a session through the API's REST start/stop, which
// only set the API's phase (Pending, Stopping). The CR's phase is behind until
// the operator acts, and the operator learns of the request from annotations
// on the CR (the protocol of the ambient-code platform's backend). Until it
// acts, the write-back must not carry the CR's old phase over the request
// (that undid every start and stop within a second), and it must tell the
// operator: once, and again only when the operator lost the request.

// request is a start or stop the operator has not acted on: the
// desired-phase value that asks for it and the annotation stamped with the
// time it was asked.
type request struct {
	desired  string
	stampKey string
}

var (
	stopRequest  = request{desired: string(session.PhaseStopped), stampKey: spec.AnnotationStopRequestedAt}
	startRequest = request{desired: string(session.PhaseRunning), stampKey: spec.AnnotationStartRequestedAt}
)

// requestFor returns the request an API phase makes of a CR in crPhase, or
// nil: a stop (API Stopping) of a CR the operator may still stop (Pending,
// Creating, Running), or a start (API Pending) of a terminal CR. A CR already
// Stopping or terminal after a stop, or no longer terminal after a start,
// has moved: nothing is pending.
func requestFor(apiPhase, crPhase session.Phase) *request {
	switch {
	case apiPhase == session.PhaseStopping && crPhase.Stoppable():
		return &stopRequest
	case apiPhase == session.PhasePending && crPhase.Terminal():
		return &startRequest
	}
	return nil
}

// withdrawsStart reports whether a stop (API Stopping) finds a start the
// operator has not acted on: the CR still terminal and asking to run. The
// start must be taken back, or the operator would start a session the user
// stopped; the stop itself needs nothing more (the CR is not running), and
// the write-back then carries the CR's terminal phase.
func withdrawsStart(apiPhase session.Phase, cr *unstructured.Unstructured) bool {
	return apiPhase == session.PhaseStopping && crPhaseOf(cr).Terminal() &&
		cr.GetAnnotations()[spec.AnnotationDesiredPhase] == startRequest.desired
}

// requestState is what the write-back remembers of one session between
// syncs for the protocol.
type requestState struct {
	// agreed is the last API phase seen equal to the CR's phase (or
	// written from it). An API phase equal to it came from the CR, not
	// from a user: a session whose CR went Pending (written to the API)
	// and then Failed is not asking to be started again.
	agreed session.Phase
	// told is the desired-phase value this replica annotated (or found
	// annotated), "" for none; toldRun is the CR's runKey then. While
	// it stays the same the operator has not acted, and
	// the request is not annotated again even when the operator clears
	// the annotations first (no flapping), until the annotation has been
	// gone for the grace (see mustTell).
	told    string
	toldRun string
	// firstToldAt is when this request was first told or found annotated
	// (for the log of a second tell); goneAt is when a sync first found
	// the told request's annotation gone, zero while it is there.
	firstToldAt time.Time
	goneAt      time.Time
}

// DefaultRequestGrace is the default of Config.RequestGrace: how long a
// told start or stop may be missing from the CR, the CR unmoved, before it
// is told again. The operator's clear-then-act takes a moment (a pass of
// its reconcile loop), not half a minute.
const DefaultRequestGrace = 30 * time.Second

// requests holds the requestState of recently synced sessions (bounded like
// the session cache: an evicted one is told again at worst, if the CR
// lacks the annotations).
type requests struct {
	mu    sync.Mutex // guards read-modify-write of one entry
	m     *lru.Cache[string, requestState]
	grace time.Duration
}

func newRequests(size int, grace time.Duration) (*requests, error) {
	m, err := lru.New[string, requestState](size)
	if err != nil {
		return nil, fmt.Errorf("request cache: %w", err)
	}
	return &requests{m: m, grace: grace}, nil
}

// pending returns the request of session id still waiting for the operator,
// given the API's phase and completion time and the CR, or nil. It records
// what this sync learned: the CR agreeing with the API, or the operator
// having acted (the CR's runKey changed since the request was told).
//
// An API Pending and a terminal CR are a start only when the Pending is a
// user's: not one the write-back carried from the CR before its run ended
// (agreed, remembered by this replica; or, when it remembers nothing, the
// API not holding the run's end: see endSeen).
func (r *requests) pending(id string, apiPhase session.Phase, apiEnd *timestamppb.Timestamp, cr *unstructured.Unstructured) *request {
	crPhase := crPhaseOf(cr)
	r.mu.Lock()
	defer r.mu.Unlock()
	st, _ := r.m.Get(id)
	if crPhase != session.PhaseNone && crPhase == apiPhase {
		st.agreed = apiPhase
	}
	req := requestFor(apiPhase, crPhase)
	if req == &startRequest && st.agreed != apiPhase && !endSeen(apiEnd, cr) {
		// Nothing remembered (a restart, a partition moved here, an
		// evicted entry), but the API's Pending is older than the end of
		// the CR's run: it came from the CR, no user saw that run end.
		st.agreed = apiPhase
	}
	if req == &startRequest && st.told == req.desired && st.toldRun != runKey(cr) {
		// The operator acted and the CR's phase is news again (it may
		// have gone Pending and back to Failed between two looks). Not
		// for a stop: a stop acted on leaves the CR Stopping or terminal
		// (no request then), so a CR that moved on within Pending,
		// Creating and Running went on with its run without the stop
		// (the operator wrote our annotations away unseen and carried on)
		// and the stop still stands, to be told again (mustTell).
		st.agreed = apiPhase
	}
	if req == nil || apiPhase == st.agreed {
		st.told, st.goneAt = "", time.Time{}
		r.m.Add(id, st)
		return nil
	}
	r.m.Add(id, st)
	return req
}

// telling is what mustTell decides of a pending request.
type telling struct {
	// tell: annotate the CR now.
	tell bool
	// again: the tell repeats one this replica made (first at firstTold)
	// that the operator lost.
	again     bool
	firstTold time.Time
	// recheck, when not zero: the told request's annotation is gone and
	// the CR unmoved, within the grace; look at the CR again after this
	// long, as no event of the CR may come.
	recheck time.Duration
}

// mustTell decides whether req has to be annotated on cr at now: not when
// cr already asks for it, nor when this replica told it already and the CR
// has not moved since (pending forgets the tell once it moved), unless the
// annotation has been gone for the grace. The operator clears the
// annotations with an Update of the whole object and may clear first and
// act a moment later: telling again at once would put a request back that
// it is about to carry out. But it also writes back whole objects read
// before our patch (its runner token provisioning sets the annotations of
// its stale copy), which drops the request unseen: the CR would then never
// move, and the session stay Stopping (or Pending) for good. A repeated
// request is harmless: the operator stops only a Pending, Creating or
// Running CR and starts only one in another phase, and the CR is still in
// the phase the request was told for.
// The grace counts from the first sync that found the annotation gone, so
// a slow operator that clears late still has all of it to act.
func (r *requests) mustTell(id string, req *request, cr *unstructured.Unstructured, now time.Time) telling {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, _ := r.m.Get(id)
	if cr.GetAnnotations()[spec.AnnotationDesiredPhase] == req.desired {
		if st.told != req.desired {
			st.firstToldAt = now
		}
		st.told, st.toldRun, st.goneAt = req.desired, runKey(cr), time.Time{}
		r.m.Add(id, st)
		return telling{}
	}
	if st.told != req.desired {
		return telling{tell: true}
	}
	if st.goneAt.IsZero() {
		st.goneAt = now
		r.m.Add(id, st)
	}
	if wait := r.grace - now.Sub(st.goneAt); wait > 0 {
		return telling{recheck: wait}
	}
	return telling{tell: true, again: true, firstTold: st.firstToldAt}
}

// markTold records that req was annotated on cr at now.
func (r *requests) markTold(id string, req *request, cr *unstructured.Unstructured, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, _ := r.m.Get(id)
	if st.told != req.desired {
		st.firstToldAt = now
	}
	st.told, st.toldRun, st.goneAt = req.desired, runKey(cr), time.Time{}
	r.m.Add(id, st)
}

// agree records that the API's phase is now phase, written from the CR.
func (r *requests) agree(id string, phase session.Phase) {
	if phase == session.PhaseNone {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st, _ := r.m.Get(id)
	st.agreed = phase
	r.m.Add(id, st)
}

func (r *requests) forget(id string) { r.m.Remove(id) }

// tell asks the operator for req on cr: a merge patch of the two
// annotations only, not the server-side apply of the spec, whose field
// manager would own them and put them back after the operator removes them.
// The resourceVersion makes it conditional: a CR that changed since it was
// read (the operator may have acted) is looked at again instead.
func tell(ctx context.Context, dyn dynamic.Interface, cr *unstructured.Unstructured, req *request, now time.Time) error {
	patch := map[string]any{"metadata": map[string]any{
		"resourceVersion": cr.GetResourceVersion(),
		"annotations": map[string]string{
			spec.AnnotationDesiredPhase: req.desired,
			req.stampKey:                now.UTC().Format(time.RFC3339),
		},
	}}
	body, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("encode request annotations: %w", err)
	}
	_, err = dyn.Resource(apply.AgenticSessionGVR).Namespace(cr.GetNamespace()).Patch(ctx, cr.GetName(), types.MergePatchType, body,
		metav1.PatchOptions{FieldManager: apply.FieldManager})
	if err != nil {
		return fmt.Errorf("annotate agenticsession %s/%s with desired phase %s: %w", cr.GetNamespace(), cr.GetName(), req.desired, err)
	}
	return nil
}

// endSeen reports whether the API's completion time (apiEnd) is the end of
// the CR's current run, at the second precision of the CR's RFC 3339 time.
// A user can start a session only once the API shows it ended (the start's
// guard), and the write-back carries the CR's completion time with that
// terminal phase, so a user's start finds it there: the real server's start
// sets the phase alone. A Pending the write-back carried from the CR before
// the run ended finds the API's end missing or an older run's. Without a
// completion time in the CR there is nothing to compare: it returns true
// and the start is judged by what the replica remembers alone.
func endSeen(apiEnd *timestamppb.Timestamp, cr *unstructured.Unstructured) bool {
	v, _, _ := unstructured.NestedString(cr.Object, "status", "completionTime")
	crEnd, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return true
	}
	return apiEnd != nil && apiEnd.AsTime().Truncate(time.Second).Equal(crEnd.Truncate(time.Second))
}

func crPhaseOf(cr *unstructured.Unstructured) session.Phase {
	p, _, _ := unstructured.NestedString(cr.Object, "status", "phase")
	return session.Phase(p)
}

// runKey is what tells that the operator acted on a request: the CR's
// phase, start and completion times. A start that went Pending and failed
// again between two looks still has new times; other status fields (the
// operator's lastActivityTime of a running session) change without any
// action on the request, so they are left out.
func runKey(cr *unstructured.Unstructured) string {
	get := func(k string) string {
		v, _, _ := unstructured.NestedFieldNoCopy(cr.Object, "status", k)
		s, _ := v.(string)
		return s
	}
	return get("phase") + "|" + get("startTime") + "|" + get("completionTime")
}
