package memapi

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Server-filled defaults of a new session.
const (
	DefaultLLMModel       = "sonnet"
	DefaultLLMTemperature = 0.7
	DefaultLLMMaxTokens   = 4000
)

type sessionService struct {
	ambientv1.UnimplementedSessionServiceServer
	r *resource[*ambientv1.Session]
}

var _ ambientv1.SessionServiceServer = (*sessionService)(nil)

// Sessions returns the SessionService implementation for in-process calls
// (seeding, benchmarks). Such calls skip the token check and fault
// injection; their results are copies the caller owns, except List items,
// which are shared and must not be modified.
func (s *Server) Sessions() ambientv1.SessionServiceServer {
	return &sessionService{r: s.sessionResource()}
}

func (s *Server) sessionResource() *resource[*ambientv1.Session] {
	return &resource[*ambientv1.Session]{
		s: s, st: s.sessions, kind: "Session", path: "sessions",
		listMethod: ambientv1.SessionService_ListSessions_FullMethodName,
		setMeta:    func(o *ambientv1.Session, m *ambientv1.ObjectReference) { o.Metadata = m },
	}
}

func (x *sessionService) GetSession(_ context.Context, req *ambientv1.GetSessionRequest) (*ambientv1.Session, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	return x.r.get(req.GetId())
}

// CreateSession needs a name (InvalidArgument "name is required", like the
// real gRPC handler); the rest is create, with the caller as the creator.
func (x *sessionService) CreateSession(ctx context.Context, req *ambientv1.CreateSessionRequest) (*ambientv1.Session, error) {
	if err := checkRequired("name", req.GetName()); err != nil {
		return nil, err
	}
	obj := &ambientv1.Session{}
	if err := copyFields(obj, req, false); err != nil {
		return nil, errInternal(fmt.Errorf("create session: %w", err))
	}
	return x.create(obj, callerOf(ctx))
}

// create stores obj (a create request's fields, see convertBody for REST)
// as a new session with the server-filled defaults: llm_model,
// llm_temperature, llm_max_tokens when unset, and kube_cr_name = id. It
// accepts any project_id (the real server does not check it); a
// parent_session_id must name a session, live or deleted (the real foreign
// key, which the sessions store checks: see New).
//
// created_by_user_id is the creating user's name, by (nil: the service
// token, which leaves it unset), whatever the request says: the real
// server's handlers, gRPC and REST, copy every other field of the request
// and never that one (read from its code).
func (x *sessionService) create(obj *ambientv1.Session, by *User) (*ambientv1.Session, error) {
	obj.CreatedByUserId = nil
	if by != nil {
		obj.CreatedByUserId = proto.String(by.Name)
	}
	id := newID()
	// Upstream's BeforeCreate fills an empty model as well as a missing
	// one (read from its code).
	if obj.GetLlmModel() == "" {
		obj.LlmModel = proto.String(DefaultLLMModel)
	}
	if obj.LlmTemperature == nil {
		obj.LlmTemperature = proto.Float64(DefaultLLMTemperature)
	}
	if obj.LlmMaxTokens == nil {
		obj.LlmMaxTokens = proto.Int32(DefaultLLMMaxTokens)
	}
	obj.KubeCrName = proto.String(id)
	return x.r.create(id, obj)
}

func (x *sessionService) UpdateSession(_ context.Context, req *ambientv1.UpdateSessionRequest) (*ambientv1.Session, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	return x.update(req)
}

// update sets the fields present in req (id selects the object); a
// parent_session_id naming no session is refused after the lookup, as
// the real database refuses the row (the store's foreign key).
func (x *sessionService) update(req *ambientv1.UpdateSessionRequest) (*ambientv1.Session, error) {
	return x.r.update(req.GetId(), func(obj *ambientv1.Session) error {
		if err := copyFields(obj, req, false, "id"); err != nil {
			return errInternal(fmt.Errorf("update session: %w", err))
		}
		return nil
	})
}

func (x *sessionService) DeleteSession(_ context.Context, req *ambientv1.DeleteSessionRequest) (*ambientv1.DeleteSessionResponse, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	x.r.remove(req.GetId())
	return &ambientv1.DeleteSessionResponse{}, nil
}

func (x *sessionService) ListSessions(_ context.Context, req *ambientv1.ListSessionsRequest) (*ambientv1.ListSessionsResponse, error) {
	items, meta := x.r.list(req.GetPage(), req.GetSize(), nil, nil)
	return &ambientv1.ListSessionsResponse{Items: items, Metadata: meta}, nil
}

func (x *sessionService) WatchSessions(_ *ambientv1.WatchSessionsRequest, stream ambientv1.SessionService_WatchSessionsServer) error {
	return watch(x.r.s, x.r.st, stream, func(typ ambientv1.EventType, obj *ambientv1.Session, id string) *ambientv1.SessionWatchEvent {
		return &ambientv1.SessionWatchEvent{Type: typ, Session: obj, ResourceId: id}
	})
}

// UpdateSessionStatus needs an id (the gRPC handler's check); the rest is
// updateStatus.
func (x *sessionService) UpdateSessionStatus(_ context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	return x.updateStatus(req)
}

// updateStatus sets only the fields present in req, in the real service's
// order of checks (its UpdateStatus, shared by gRPC and REST PATCH
// /sessions/{id}/status; read from its code): a request with no status
// field at all is InvalidArgument (400 id 8) before the id is looked up, an
// unknown id NotFound (404 id 7), and a phase not among session.Phases()
// InvalidArgument (400 id 8).
func (x *sessionService) updateStatus(req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	if !setsStatus(req) {
		return nil, errValidation("status patch body must set at least one field: phase, start_time, completion_time, " +
			"sdk_session_id, sdk_restart_count, conditions, reconciled_repos, reconciled_workflow, kube_cr_uid, kube_namespace")
	}
	return x.r.update(req.GetId(), func(o *ambientv1.Session) error {
		if req.Phase != nil && !session.Phase(req.GetPhase()).Valid() {
			return errValidation("invalid phase %q; must be one of: %s", req.GetPhase(), phaseList())
		}
		applyStatus(o, req)
		return nil
	})
}

// setsStatus reports whether req sets any field besides the id.
func setsStatus(req *ambientv1.UpdateSessionStatusRequest) bool {
	set := false
	req.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		set = fd.Name() != "id"
		return !set
	})
	return set
}

// phaseList is the seven phases as the real server's reason lists them.
func phaseList() string {
	names := make([]string, 0, len(session.Phases()))
	for _, p := range session.Phases() {
		names = append(names, string(p))
	}
	return strings.Join(names, ", ")
}

// transition is one of the REST-only session actions (there is no Start or
// Stop RPC): the phases it starts from and the phase it sets.
type transition struct {
	verb   string // "start" or "stop"
	from   func(session.Phase) bool
	must   string // the real server's wording of from
	target session.Phase
}

// The real server's guards and 409 reasons (measured).
var (
	startTransition = transition{verb: "start", from: session.Phase.Startable,
		must: "must be empty, Stopped, Failed, or Completed", target: session.PhasePending}
	stopTransition = transition{verb: "stop", from: session.Phase.Stoppable,
		must: "must be Running, Creating, or Pending", target: session.PhaseStopping}
)

// transition sets the target phase if the session's phase allows it, else
// answers the real server's 409 (id 6), e.g. `cannot start session in phase
// "Pending"; must be empty, Stopped, Failed, or Completed`. Check and write
// are one step under the store lock, so two concurrent starts cannot both
// pass the guard.
func (x *sessionService) transition(id string, t transition) (*ambientv1.Session, error) {
	return x.r.update(id, func(o *ambientv1.Session) error {
		if !t.from(session.PhaseOf(o)) {
			return errConflict(fmt.Sprintf("cannot %s session in phase %q; %s", t.verb, o.GetPhase(), t.must))
		}
		o.Phase = t.target.Ptr()
		return nil
	})
}

// applyStatus copies the status fields present in req. The request's field
// numbers differ from Session's, so this is explicit.
func applyStatus(o *ambientv1.Session, req *ambientv1.UpdateSessionStatusRequest) {
	if req.Phase != nil {
		o.Phase = proto.String(req.GetPhase())
	}
	if req.StartTime != nil {
		o.StartTime = proto.CloneOf(req.StartTime)
	}
	if req.CompletionTime != nil {
		o.CompletionTime = proto.CloneOf(req.CompletionTime)
	}
	if req.SdkSessionId != nil {
		o.SdkSessionId = proto.String(req.GetSdkSessionId())
	}
	if req.SdkRestartCount != nil {
		o.SdkRestartCount = proto.Int32(req.GetSdkRestartCount())
	}
	if req.Conditions != nil {
		o.Conditions = proto.String(req.GetConditions())
	}
	if req.ReconciledRepos != nil {
		o.ReconciledRepos = proto.String(req.GetReconciledRepos())
	}
	if req.ReconciledWorkflow != nil {
		o.ReconciledWorkflow = proto.String(req.GetReconciledWorkflow())
	}
	if req.KubeCrUid != nil {
		o.KubeCrUid = proto.String(req.GetKubeCrUid())
	}
	if req.KubeNamespace != nil {
		o.KubeNamespace = proto.String(req.GetKubeNamespace())
	}
}
