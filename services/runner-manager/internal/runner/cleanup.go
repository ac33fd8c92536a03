package runner

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
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
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") { // a link to a directory is not one (ReadDir uses Lstat); trashDir is ours
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

// runnerMade reports whether workspace p holds a runner's log or the
// prompt file, the marks of a directory this service made (every spawn
// writes the prompt, then creates both logs; a start that found no port
// has written the prompt only).
func runnerMade(p string) bool {
	for _, name := range []string{StdoutLog, StderrLog, PromptFile} {
		if fi, err := os.Lstat(filepath.Join(p, name)); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// trashDir, in the workspace root, holds workspaces being removed. Its
// name cannot be a session id's (ids never start with a dot).
const trashDir = ".trash"

// RemoveWorkspace deletes the workspace of a session that is gone (its
// logs, its prompt file, whatever its runners left), so a deleted session
// neither keeps its user's data on the host nor fills the disk. It removes
// nothing while a runner of the session runs or starts here (false), nor a
// directory no runner made (false). The check and a rename into trashDir
// are one step under the manager's lock, so a start of the session either
// came first (nothing removed) or comes after (a fresh workspace); the
// deletion itself, which takes as long as the disk needs for a workspace
// of cloned repositories, runs after it on a goroutine of its own (Wait
// waits for it), holding up neither starts nor the caller. A trash a
// crash left behind is emptied the next time.
func (m *Manager) RemoveWorkspace(sessionID string) (bool, error) {
	p, err := WorkspacePath(m.cfg.WorkspaceRoot, sessionID)
	if err != nil {
		return false, err
	}
	trash := filepath.Join(filepath.Dir(p), trashDir)
	if err := os.Mkdir(trash, workspaceMode); err != nil && !errors.Is(err, os.ErrExist) {
		return false, fmt.Errorf("create workspace trash: %w", err)
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
	// A fresh name per removal (an earlier removal of the same session
	// may still be under way), taken by the rename itself: a directory
	// made in the trash first, to rename into, could be deleted by a
	// deleter of an earlier removal before the rename (the rename then
	// failed with "no such file or directory"; TestRemoveWorkspace, once
	// in a CI run). rand.Text is 26 characters of 128 random bits: the
	// name is nobody else's.
	doomed := filepath.Join(trash, sessionID+"-"+rand.Text())
	if err := os.Rename(p, doomed); err != nil {
		return false, fmt.Errorf("remove workspace %s: %w", p, err)
	}
	m.wg.Go(func() { m.emptyTrash(trash) })
	return true, nil
}

// emptyTrash deletes everything in trash, logging what it cannot delete
// (the next removal tries again).
func (m *Manager) emptyTrash(trash string) {
	m.trashMu.Lock() // one deleter at a time: they would race over the same entries
	defer m.trashMu.Unlock()
	entries, err := os.ReadDir(trash)
	if err != nil {
		m.log.Warn("empty the workspace trash", slog.String(logkey.Err, err.Error()))
		return
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(trash, e.Name())); err != nil {
			m.log.Warn("empty the workspace trash", slog.String(logkey.Err, err.Error()))
		}
	}
}
