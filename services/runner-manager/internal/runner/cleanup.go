package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Workspace is a session's directory in the workspace root, as Workspaces
// lists it.
type Workspace struct {
	SessionID string
	ModTime   time.Time
}

// Workspaces lists the directories in the workspace root that a runner of
// this service made: named as a session id, not a link, holding a runner's
// StdoutLog or StderrLog. Anything else in the root (an operator's files)
// is none of its business and never listed. A root that does not exist
// yet has none.
func (m *Manager) Workspaces() ([]Workspace, error) {
	entries, err := os.ReadDir(m.cfg.WorkspaceRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	var out []Workspace
	for _, e := range entries {
		if !e.IsDir() { // a link to a directory is not one (ReadDir uses Lstat)
			continue
		}
		p, err := WorkspacePath(m.cfg.WorkspaceRoot, e.Name())
		if err != nil || !runnerMade(p) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, Workspace{SessionID: e.Name(), ModTime: fi.ModTime()})
	}
	return out, nil
}

// runnerMade reports whether workspace p holds a runner's log, the mark of
// a directory this service made (every spawn creates both logs).
func runnerMade(p string) bool {
	for _, name := range []string{StdoutLog, StderrLog} {
		if fi, err := os.Lstat(filepath.Join(p, name)); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// RemoveWorkspace deletes the workspace of a session that is gone (its
// logs, its prompt file, whatever its runners left), so a deleted session
// neither keeps its user's data on the host nor fills the disk. It removes
// nothing while a runner of the session runs or starts here (false), nor a
// directory no runner made (false). The check and the removal are one
// step under the manager's lock, so a start of the session either came
// first (nothing removed) or comes after (a fresh workspace).
func (m *Manager) RemoveWorkspace(sessionID string) (bool, error) {
	p, err := WorkspacePath(m.cfg.WorkspaceRoot, sessionID)
	if err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, running := m.procs[sessionID]; running {
		return false, nil
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat workspace %s: %w", p, err)
	}
	if !fi.IsDir() || !runnerMade(p) {
		return false, nil
	}
	if err := os.RemoveAll(p); err != nil {
		return false, fmt.Errorf("remove workspace %s: %w", p, err)
	}
	return true, nil
}
