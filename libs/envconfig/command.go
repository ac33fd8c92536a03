package envconfig

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/shlex"
)

// wantCommand is the expected form of a command line, for error messages.
const wantCommand = `a command line with shell quoting (no expansion), e.g. python "my runner.py" --flag 'a value'`

// ParseCommand splits a command line into the program and its arguments with
// POSIX shell quoting and nothing else: '…' is literal, "…" allows \
// escapes, \ escapes one character outside quotes, and a word starting with
// # begins a comment that runs to the end of the line. There is no
// expansion of any kind ($VAR, ~ and globs stay as written) and no pipes or
// redirections. This is how LOCAL_RUNNER_COMMAND is read, and devstack
// checks its --runner-command with the same function so the two can't
// differ. Errors wrap [ErrInvalid]: an unterminated quote or escape, or a
// line without a program.
func ParseCommand(line string) ([]string, error) {
	argv, err := shlex.Split(line)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: no program", ErrInvalid)
	}
	return argv, nil
}

// QuoteCommand returns a command line that [ParseCommand] splits back into
// exactly argv (for valid UTF-8 words; the lexer replaces invalid bytes).
// Words of only safe characters stay bare; others are single-quoted, each
// ' inside written as a closing quote, an escaped quote and an opening one.
func QuoteCommand(argv ...string) string {
	words := make([]string, len(argv))
	for i, w := range argv {
		if w != "" && strings.Trim(w, safeWordChars) == "" {
			words[i] = w
			continue
		}
		words[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(words, " ")
}

// safeWordChars need no quoting anywhere in a word ("#" does at its start).
const safeWordChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,"

// ResolveCommand returns argv with its relative paths made absolute against
// dir, the directory the command line was written in. A runner does not
// run there but in its session workspace, where `bin/demo-runner` or
// `node runner.mjs` would name nothing. Resolved are the program when it
// contains a "/" (a bare name is looked up in PATH, as a shell would) and
// each argument that names an existing regular file under dir (a path
// that does not exist there, or a flag, is left as written). argv is not
// modified.
func ResolveCommand(argv []string, dir string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = a
		if a == "" || filepath.IsAbs(a) {
			continue
		}
		p := filepath.Join(dir, a)
		if i == 0 {
			if strings.Contains(a, "/") {
				out[i] = p
			}
			continue
		}
		if strings.HasPrefix(a, "-") {
			continue
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			out[i] = p
		}
	}
	return out
}

// Command returns the variable's command line (def when unset) split by
// [ParseCommand] and resolved by [ResolveCommand] against the process's
// working directory. A bad line records a [*VarError] and returns nil.
func (l *Loader) Command(name, def string) []string {
	v, ok := l.raw(name)
	if !ok {
		v = def
	}
	argv, err := ParseCommand(v)
	if err != nil {
		l.invalid(name, wantCommand, v, err)
		return nil
	}
	dir, err := os.Getwd()
	if err != nil {
		// Without a working directory nothing relative can be resolved;
		// the spawn then reports the path it could not find.
		return argv
	}
	return ResolveCommand(argv, dir)
}
