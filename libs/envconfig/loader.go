package envconfig

import (
	"errors"
	"os"
	"strings"
)

// LookupFunc returns the value of an environment variable and whether it is
// set, like [os.LookupEnv].
type LookupFunc func(name string) (string, bool)

// Map returns a [LookupFunc] that reads from m; tests and the compose test use
// it instead of the process environment.
func Map(m map[string]string) LookupFunc {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

// Loader reads typed values from the environment and collects every problem.
// Each getter returns the default (or zero value) when the variable is bad,
// so a caller can build its whole Config and then check [Loader.Err] once.
//
// A Loader is not safe for concurrent use.
type Loader struct {
	lookup LookupFunc
	errs   []error
	names  []string        // first-read order, for Names
	seen   map[string]bool // names already in names
}

// New returns a Loader reading through lookup; nil means [os.LookupEnv].
func New(lookup LookupFunc) *Loader {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return &Loader{lookup: lookup, seen: map[string]bool{}}
}

// Err returns every problem found so far joined with errors.Join (each a
// [*VarError] wrapping [ErrMissing] or [ErrInvalid]), or nil.
func (l *Loader) Err() error {
	return errors.Join(l.errs...)
}

// Names returns the variable names the Loader has read, in first-read order
// and without duplicates. Docs tests use it to check that every variable a
// service reads is documented.
func (l *Loader) Names() []string {
	return append([]string(nil), l.names...)
}

// raw records name as read and returns its value; an empty value counts as
// unset.
func (l *Loader) raw(name string) (string, bool) {
	if !l.seen[name] {
		l.seen[name] = true
		l.names = append(l.names, name)
	}
	v, ok := l.lookup(name)
	if !ok || v == "" {
		return "", false
	}
	return v, true
}

// trimmed is raw with surrounding white space removed, for typed values.
func (l *Loader) trimmed(name string) (string, bool) {
	v, ok := l.raw(name)
	if !ok {
		return "", false
	}
	v = strings.TrimSpace(v)
	return v, v != ""
}

// Invalid records that the variable's value got does not have the form
// want, for checks no getter makes (a value derived from several sources).
// cause may be nil.
func (l *Loader) Invalid(name, want, got string, cause error) {
	l.invalid(name, want, got, cause)
}

func (l *Loader) invalid(name, want, got string, cause error) {
	l.errs = append(l.errs, &VarError{Name: name, Want: want, Got: got, Cause: cause})
}

func (l *Loader) missing(name, want string) {
	l.errs = append(l.errs, &VarError{Name: name, Want: want, Missing: true})
}
