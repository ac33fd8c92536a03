package reconcile

import "sync"

// projectStarts counts, per project, the starts startWaiting took from
// the capacity queue that have not finished, so that a project at
// LOCAL_MAX_SESSIONS_PER_PROJECT is passed over while its earlier starts
// still run (their runners may not hold a slot yet), as r.starting does
// for the replica's slots. A start counts from when startWaiting takes it
// until its goroutine ends (goStart), or until ensureRunning returns
// without one. Safe for concurrent use.
type projectStarts struct {
	mu      sync.Mutex
	byID    map[string]projectStart // guarded by mu
	byCount map[string]int          // guarded by mu: starts per project
}

type projectStart struct {
	project string
	handed  bool // running on its own goroutine (goStart)
}

func newProjectStarts() *projectStarts {
	return &projectStarts{byID: map[string]projectStart{}, byCount: map[string]int{}}
}

// add counts the start of session id of project.
func (s *projectStarts) add(id, project string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byID[id]; ok {
		return
	}
	s.byID[id] = projectStart{project: project}
	s.byCount[project]++
}

// handOff notes that id's start runs on its own goroutine now: it counts
// until done.
func (s *projectStarts) handOff(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.byID[id]; ok {
		st.handed = true
		s.byID[id] = st
	}
}

// unlessHanded ends the count of id's start unless it was handed off.
func (s *projectStarts) unlessHanded(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.byID[id]; ok && !st.handed {
		s.removeLocked(id, st.project)
	}
}

// done ends the count of id's start.
func (s *projectStarts) done(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.byID[id]; ok {
		s.removeLocked(id, st.project)
	}
}

func (s *projectStarts) removeLocked(id, project string) {
	delete(s.byID, id)
	if s.byCount[project]--; s.byCount[project] <= 0 {
		delete(s.byCount, project)
	}
}

// count returns how many starts of project are counted.
func (s *projectStarts) count(project string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byCount[project]
}
