package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WorkspacePath returns root/<sessionID>, or [ErrBadSessionID] when the id
// would not be a single directory directly inside root ("../../etc", "a/b",
// ".", "", NUL bytes).
func WorkspacePath(root, sessionID string) (string, error) {
	if sessionID == "" || sessionID == "." || sessionID == ".." ||
		strings.ContainsAny(sessionID, `/\`+"\x00") || !filepath.IsLocal(sessionID) {
		return "", fmt.Errorf("session id %q: %w", sessionID, ErrBadSessionID)
	}
	absRoot, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("workspace root %q: %w", root, err)
	}
	p := filepath.Join(absRoot, sessionID)
	// Defence in depth: the joined path must sit directly in the root.
	if filepath.Dir(p) != absRoot {
		return "", fmt.Errorf("session id %q: %w", sessionID, ErrBadSessionID)
	}
	return p, nil
}

// Modes of the workspace root (when runner-manager creates it) and of each
// workspace: owner only. Other users of the host see neither the prompts
// nor the runners' files. Runners share runner-manager's user, so to each
// other these modes mean nothing (docs/operations.md, trust model).
const (
	rootMode      = 0o700
	workspaceMode = 0o700
)

// CheckRoot creates the workspace root if it is missing (rootMode) and
// checks that a file can be made in it, so that a root that cannot hold
// workspaces is found at start-up rather than at every session's spawn.
func CheckRoot(root string) error {
	if err := os.MkdirAll(root, rootMode); err != nil {
		return fmt.Errorf("create workspace root: %w", err)
	}
	f, err := os.CreateTemp(root, ".write-check-*")
	if err != nil {
		return fmt.Errorf("write in workspace root: %w", err)
	}
	name := f.Name()
	return errors.Join(f.Close(), os.Remove(name))
}

// ensureWorkspace creates the workspace directory (workspaceMode, also
// set on one left by an earlier run) and returns it. It refuses a
// workspace that is a symlink, so a planted link cannot redirect the
// runner's files outside the root.
func ensureWorkspace(root, sessionID string) (string, error) {
	p, err := WorkspacePath(root, sessionID)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), rootMode); err != nil {
		return "", fmt.Errorf("create workspace root: %w", err)
	}
	if err := os.Mkdir(p, workspaceMode); err != nil && !os.IsExist(err) {
		return "", fmt.Errorf("create workspace %s: %w", p, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return "", fmt.Errorf("stat workspace %s: %w", p, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("workspace %s is not a directory: %w", p, ErrBadSessionID)
	}
	if fi.Mode().Perm() != workspaceMode {
		if err := os.Chmod(p, workspaceMode); err != nil {
			return "", fmt.Errorf("restrict workspace %s: %w", p, err)
		}
	}
	return p, nil
}

// PromptFile is the name of the prompt file in a workspace.
const PromptFile = ".initial-prompt"

// writePrompt writes prompt to the workspace's prompt file (mode 0600) and
// returns its path. An existing file (or a link planted there by an
// earlier runner of the session) is removed first and the new one created
// exclusively, so the write never follows a link out of the workspace.
func writePrompt(workspace, prompt string) (string, error) {
	p := filepath.Join(workspace, PromptFile)
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return "", fmt.Errorf("replace prompt file: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create prompt file: %w", err)
	}
	if _, err := f.WriteString(prompt); err != nil {
		closeQuietly(f)
		return "", fmt.Errorf("write prompt file: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write prompt file: %w", err)
	}
	return p, nil
}
