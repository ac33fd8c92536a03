package chaos

import (
	"slices"
	"strings"
	"time"
)

// Grant is one group_access entry of project settings.
type Grant struct {
	Group string `json:"group"`
	Role  string `json:"role"`
}

// allowedRoles are the ClusterRoles kube-reconciler may bind (its default
// ROLE_ALLOW_LIST, the chart's projectRoles); refusedRole must never be
// bound, whatever a settings edit asks.
var (
	allowedRoles = []string{"ambient-project-admin", "ambient-project-edit", "ambient-project-view"}
	refusedRole  = "cluster-admin"
	groups       = []string{"chaos-g1", "chaos-g2", "chaos-g3", "chaos-g4"}
)

// wantBindings is what kube-reconciler must bind for access: the allowed
// entries, once each, sorted.
func wantBindings(access []Grant) []Grant {
	var out []Grant
	for _, g := range access {
		if slices.Contains(allowedRoles, g.Role) && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	sortGrants(out)
	return out
}

func sortGrants(gs []Grant) {
	slices.SortFunc(gs, func(a, b Grant) int {
		if c := strings.Compare(a.Group, b.Group); c != 0 {
			return c
		}
		return strings.Compare(a.Role, b.Role)
	})
}

// project is one project of the run and its settings.
type project struct {
	ID, Name string
	// Local projects run their sessions as local runners (RUNNER_PROJECTS);
	// the others as AgenticSessions (KUBE_SESSION_SELECTOR=projects=...).
	Local      bool
	SettingsID string
	// Access is the group_access last written.
	Access []Grant
}

// Namespace is the project's namespace: its name, lower-cased
// (kube-reconciler's spec.NamespaceName).
func (p *project) Namespace() string { return strings.ToLower(p.Name) }

// session is what the harness last asked of one session.
type session struct {
	ID      string
	Project *project
	// Running: created or started, not stopped since.
	Running bool
	Deleted bool
	// Gen is the value of the chaos-gen label last written.
	Gen      int
	Oversize bool
	// OverLimit: the session alone is over the event payload limit now
	// (FaultOverLimit), until the harness makes it smaller. Consumers get
	// only reference events of it, so it must carry the informer's
	// condition EventsPublished=False ObjectTooLarge; a kube one gets no
	// AgenticSession (kube-reconciler reads events and KV, which never
	// held it), no runner, and event-tally never counts it.
	OverLimit bool
	// RunnerKilled: a fault killed its runner (FaultRunnerKill); it must
	// end Failed, and is pinned from then on.
	RunnerKilled bool
	// Pinned sessions are never picked by the schedule: the witnesses (local
	// sessions that run from start to end, so every fault meets runners it
	// must not disturb), the oversize object and the over-limit ones.
	Pinned  bool
	Created time.Time
	// Touched is the time of the last change the harness made to it.
	Touched time.Time
}

// model is the desired state: everything the harness asked for. The driver
// owns it; readers take copies under the driver's lock.
type model struct {
	projects []*project
	sessions map[string]*session
	order    []string // session ids in creation order
	deletes  int
}

func newModel() *model { return &model{sessions: map[string]*session{}} }

func (m *model) add(s *session) {
	m.sessions[s.ID] = s
	m.order = append(m.order, s.ID)
}

// live returns the sessions not deleted, in creation order, that match keep.
func (m *model) live(keep func(*session) bool) []*session {
	var out []*session
	for _, id := range m.order {
		s := m.sessions[id]
		if !s.Deleted && keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// localWanted counts the sessions that want a local runner now.
func (m *model) localWanted() int {
	return len(m.live(func(s *session) bool { return s.Project.Local && s.Running }))
}

// snapshot copies the model for the audit: session values and projects
// (their Access copied too), in creation order.
func (m *model) snapshot() ([]session, []project) {
	ss := make([]session, 0, len(m.order))
	for _, id := range m.order {
		ss = append(ss, *m.sessions[id])
	}
	ps := make([]project, 0, len(m.projects))
	for _, p := range m.projects {
		c := *p
		c.Access = slices.Clone(p.Access)
		ps = append(ps, c)
	}
	return ss, ps
}
