// Package capacity holds the sessions waiting for a free runner slot. A
// Pending session that finds this replica at LOCAL_MAX_SESSIONS (or out of
// ports) is reported (condition RunnerStarted=False, CapacityExceeded or
// NoPortAvailable), acked and queued here; when a runner ends, the queue
// wakes its reader, which starts waiting sessions while room lasts
// (reconcile's startWaiting). The policy lives in package reconcile; this
// is the queue.
//
// The queue is fair between projects: each freed slot goes to the project
// that has waited longest since it was last served, and within a project
// to its longest waiting session. Served oldest first overall, one tenant
// that created 500 sessions at once made every other tenant's new session
// wait behind all 500.
package capacity

import (
	"container/list"
	"sync"
)

// Queue is the set of waiting sessions, per project in the order they
// started waiting, and the projects in the order they are served next,
// plus a wake-up signal. Every operation is O(1), so thousands of waiting
// sessions cost nothing per freed slot. Safe for concurrent use.
type Queue struct {
	wake chan struct{} // buffered 1: a wake-up is never lost and Freed never blocks

	mu sync.Mutex
	// turns holds the *project of every project with waiting sessions,
	// the next one to serve at the front: a project joins at the back
	// when its first session waits and goes to the back when served.
	turns    *list.List           // guarded by mu
	projects map[string]*project  // by project id; guarded by mu
	waiting  map[string]placement // by session id; guarded by mu
}

// project is one project's waiting sessions.
type project struct {
	id       string
	sessions *list.List    // session ids, longest waiting at the front
	turn     *list.Element // its element in Queue.turns
}

// placement is where a waiting session is: its project and its element in
// the project's sessions.
type placement struct {
	p *project
	e *list.Element
}

// New returns an empty queue.
func New() *Queue {
	return &Queue{
		wake: make(chan struct{}, 1), turns: list.New(),
		projects: map[string]*project{}, waiting: map[string]placement{},
	}
}

// Add queues session id of project proj; a session already waiting keeps
// its place (and its project).
func (q *Queue) Add(id, proj string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.waiting[id]; ok {
		return
	}
	q.addLocked(id, proj)
}

// addLocked queues id, not waiting, under proj. The caller holds q.mu.
func (q *Queue) addLocked(id, proj string) {
	p, ok := q.projects[proj]
	if !ok {
		p = &project{id: proj, sessions: list.New()}
		p.turn = q.turns.PushBack(p)
		q.projects[proj] = p
	}
	q.waiting[id] = placement{p: p, e: p.sessions.PushBack(id)}
}

// SetProject moves waiting session id to project proj when it waits under
// another one (the session moved project while it waited): it waits at the
// back of proj's sessions from now on, and counts against proj's cap
// (reconcile's LOCAL_MAX_SESSIONS_PER_PROJECT), not its old project's. A
// session not waiting is left alone.
func (q *Queue) SetProject(id, proj string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	pl, ok := q.waiting[id]
	if !ok || pl.p.id == proj {
		return
	}
	q.removeLocked(id)
	q.addLocked(id, proj)
}

// Remove takes session id out of the queue (started, stopped, deleted or
// moved elsewhere). Its project keeps its turn: only Take serves it.
func (q *Queue) Remove(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.removeLocked(id)
}

// Next returns the session to start next, without taking it out of the
// queue: the longest waiting session of the project that has waited
// longest since it was last served, passing over the projects full
// reports (nil: none is). The caller locks the session, then takes it
// (Take), so that nothing acts on it in between. A project passed over
// keeps its turn: it is served first once it has room again. full runs
// with the queue locked and must not call it.
func (q *Queue) Next(full func(project string) bool) (id string, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for e := q.turns.Front(); e != nil; e = e.Next() {
		p, _ := e.Value.(*project) // turns holds only *project
		if full != nil && full(p.id) {
			continue
		}
		s, _ := p.sessions.Front().Value.(string)
		return s, true
	}
	return "", false
}

// ProjectOf returns the project session id waits under, if it waits.
func (q *Queue) ProjectOf(id string) (project string, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	pl, ok := q.waiting[id]
	if !ok {
		return "", false
	}
	return pl.p.id, true
}

// Take takes session id out of the queue to start it now: its project has
// been served and goes to the back of the turns. It returns the project
// id waited under, and whether it was waiting (false: removed meanwhile,
// nothing to start).
func (q *Queue) Take(id string) (project string, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.removeLocked(id)
	if p == nil {
		return "", false
	}
	if p.sessions.Len() > 0 {
		q.turns.MoveToBack(p.turn)
	}
	return p.id, true
}

// removeLocked removes id and returns its project, nil when id was not
// waiting. A project left without sessions loses its turn: when it waits
// again it joins at the back. The caller holds q.mu.
func (q *Queue) removeLocked(id string) *project {
	pl, ok := q.waiting[id]
	if !ok {
		return nil
	}
	delete(q.waiting, id)
	pl.p.sessions.Remove(pl.e)
	if pl.p.sessions.Len() == 0 {
		q.turns.Remove(pl.p.turn)
		delete(q.projects, pl.p.id)
	}
	return pl.p
}

// Len returns how many sessions wait.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting)
}

// Has reports whether session id waits.
func (q *Queue) Has(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.waiting[id]
	return ok
}

// Freed says a runner ended and its slot is free; it never blocks.
func (q *Queue) Freed() {
	select {
	case q.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Wake receives after Freed: time to start waiting sessions.
func (q *Queue) Wake() <-chan struct{} { return q.wake }
