package session

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// EnvironmentVariables reads a session's environment_variables: one JSON
// object of strings (see DecodeJSON), each name one Kubernetes accepts for
// a container's variable (EnvVarNameFault) and no value holding a NUL
// byte, which no process environment can carry (execve ends a variable at
// the first NUL; a pod with such a variable never starts).
// kube-reconciler writes the result as the AgenticSession's
// spec.environmentVariables and runner-manager gives it to a local runner,
// so a session runs with the same variables, or fails the same way, in
// either deployment. Blank, "null" and "{}" are no variables: nil, nil.
//
// An error wraps [ErrInvalidEnvironmentVariables] and its message is the
// fault alone, without the field's name (each caller names it its own
// way). Names are checked in sorted order, so the same input always
// reports the same fault.
func EnvironmentVariables(raw string) (map[string]string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" || raw == "null" {
		return nil, nil
	}
	env, err := DecodeJSON[map[string]string](raw)
	if err != nil {
		return nil, envFault("not a JSON object of strings: %v", err)
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if why := EnvVarNameFault(k); why != "" {
			return nil, envFault("name %q: %s", clip(k), why)
		}
		if strings.ContainsRune(env[k], 0) {
			return nil, envFault("value of %q holds a NUL byte", clip(k))
		}
	}
	if len(env) == 0 { // "{}", or "null" spelled with white space inside
		return nil, nil
	}
	return env, nil
}

// envError is a fault of environment_variables. Its message is only the
// fault, so that kube-reconciler's *FieldError and runner-manager's
// ErrBadEnvironment each put the field's name in front as they do for
// their other fields.
type envError string

func envFault(format string, args ...any) envError {
	return envError(fmt.Sprintf(format, args...))
}

// Error implements error.
func (e envError) Error() string { return string(e) }

// Unwrap returns ErrInvalidEnvironmentVariables.
func (e envError) Unwrap() error { return ErrInvalidEnvironmentVariables }

// The messages of Kubernetes' IsEnvVarName (k8s.io/apimachinery
// pkg/util/validation), byte for byte (the doubled space before each "or"
// is apimachinery's RegexError's), so kube-reconciler reports a bad name
// in the words it used when it called IsEnvVarName itself (the name is now
// quoted up to 128 bytes, as libs/session quotes, not 80). Newer Kubernetes
// relaxes the names a pod accepts (KEP-4369: printable ASCII but =); both
// executors keep this stricter rule, which every cluster version accepts.
const (
	envNameCharsFault = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', " +
		"and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', " +
		"regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"
	envNameDotFault       = "must not be '.'"
	envNameDotDotFault    = "must not be '..'"
	envNameDotDotPrefixed = "must not start with '..'"
)

// EnvVarNameFault says why Kubernetes refuses name for a container's
// environment variable, "" when it accepts it: the same check and the same
// words as apimachinery's validation.IsEnvVarName, its faults joined with
// "; ". It is written out here, not imported, to keep k8s.io/apimachinery
// out of the services that have no other use for it (runner-manager);
// kube-reconciler's tests hold it to the real IsEnvVarName. The rule:
// letters, digits, '_', '-' and '.', not starting with a digit (so not
// empty), and neither ".", ".." nor starting with "..".
func EnvVarNameFault(name string) string {
	var faults []string
	if !envNameChars(name) {
		faults = append(faults, envNameCharsFault)
	}
	switch {
	case name == ".":
		faults = append(faults, envNameDotFault)
	case name == "..":
		faults = append(faults, envNameDotDotFault)
	case strings.HasPrefix(name, ".."):
		faults = append(faults, envNameDotDotPrefixed)
	}
	return strings.Join(faults, "; ")
}

// envNameChars reports whether name matches IsEnvVarName's regular
// expression, ^[-._a-zA-Z][-._a-zA-Z0-9]*$. It looks at bytes: every
// byte of a non-ASCII or invalid UTF-8 name is outside both classes, as
// every rune of it is for the regular expression.
func envNameChars(name string) bool {
	if name == "" {
		return false
	}
	for i := range len(name) {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-' || c == '.' || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}
