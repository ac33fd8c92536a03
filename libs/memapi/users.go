package memapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// MinUserTokenLen is the shortest user token accepted: shorter ones are
// guessable.
const MinUserTokenLen = 16

// AllProjects in User.Projects grants every project (a global admin).
const AllProjects = "*"

// User is a caller of the multi-user mode, which is ours: the real server
// takes users from its identity provider's JWTs and their access from role
// bindings in its database; memapi takes both from a file, so that a
// client's handling of per-user answers (agui-proxy's AGUI_AUTHZ=api) can
// be tested. See WithUsers for what a user may do.
type User struct {
	// Token is the user's bearer token (at least MinUserTokenLen characters).
	Token string `json:"token"`
	// Name is the user name; sessions the user creates get it as
	// created_by_user_id, as on the real server.
	Name string `json:"name"`
	// Groups grant the projects whose settings' group_access names one of
	// them (any role).
	Groups []string `json:"groups,omitempty"`
	// Projects are project ids granted directly; AllProjects grants all.
	Projects []string `json:"projects,omitempty"`
}

// usersFile is the JSON document of a users file.
type usersFile struct {
	Users []User `json:"users"`
}

// LoadUsers reads a users file (see ParseUsers).
func LoadUsers(path string) ([]User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	u, err := ParseUsers(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return u, nil
}

// ParseUsers reads {"users": [{"token", "name", "groups", "projects"}]}.
// Unknown keys, a short or blank-containing token, a repeated token and a
// user without a name are errors wrapping ErrInvalidOption.
func ParseUsers(r io.Reader) ([]User, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var f usersFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: users: %w", ErrInvalidOption, err)
	}
	if err := validUsers(f.Users, ""); err != nil {
		return nil, err
	}
	return f.Users, nil
}

func validUsers(users []User, serviceToken string) error {
	seen := map[string]bool{serviceToken: serviceToken != ""}
	for i, u := range users {
		switch {
		case len(u.Token) < MinUserTokenLen || strings.ContainsAny(u.Token, " \t\r\n"):
			return fmt.Errorf("%w: user %d: token must be at least %d characters without white space", ErrInvalidOption, i+1, MinUserTokenLen)
		case seen[u.Token]:
			return fmt.Errorf("%w: user %d: token is taken (by another user or the service token)", ErrInvalidOption, i+1)
		case strings.TrimSpace(u.Name) == "":
			return fmt.Errorf("%w: user %d: empty name", ErrInvalidOption, i+1)
		}
		seen[u.Token] = true
	}
	return nil
}

// WithUsers turns on the multi-user mode: besides the service token of
// WithToken (the control plane's, which may do everything), each user's
// token is accepted. Over REST a user sees only the objects of its projects
// (User.Projects, or a group in the project's group_access): lists leave
// the others out, a GET of one answers 404 and a change (create, patch,
// delete, start, stop) 403, with the bodies of the real server's
// authorization middleware; the API's User objects (UserService), which
// belong to no project, are not narrowed. Over gRPC user tokens are
// accepted and nothing is narrowed, as on the real server, whose gRPC
// handlers authorize nothing.
func WithUsers(users []User) Option {
	return func(o *options) error {
		if err := validUsers(users, ""); err != nil {
			return err
		}
		o.users = slices.Clone(users)
		return nil
	}
}

// caller is who a call was authenticated as: nil is the service token (or
// no token checked), otherwise a user.
type callerKey struct{}

func withCaller(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, callerKey{}, u)
}

func callerOf(ctx context.Context) *User {
	u, _ := ctx.Value(callerKey{}).(*User)
	return u
}

// checkCaller's errors. Their texts are the real server's REST 401 bodies
// (its bearer middleware, pkg/middleware/bearer_token.go; read from the
// code, not measured).
var (
	errHeaderFormat = errors.New("invalid authorization header format") // no "Bearer <token>"
	errEmptyToken   = errors.New("empty bearer token")
	errBadToken     = errors.New("invalid bearer token") // no known token
)

// bearerToken returns the token of an Authorization header value as the
// real server reads it: "Bearer" in any case, one space, then the token
// without surrounding white space.
func bearerToken(header string) (string, error) {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errHeaderFormat
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", errEmptyToken
	}
	return tok, nil
}

// checkCaller matches an Authorization header value against the service
// token and the users' tokens, comparing all of them in constant time. It
// returns nil for the service token, the user for a user token.
func (s *Server) checkCaller(header string) (*User, error) {
	tok, err := bearerToken(header)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(tok))
	service := s.opts.token != "" && subtle.ConstantTimeCompare(h[:], s.tokenHash[:]) == 1
	match := -1
	for i := range s.userHashes {
		if subtle.ConstantTimeCompare(h[:], s.userHashes[i][:]) == 1 {
			match = i
		}
	}
	switch {
	case service:
		return nil, nil
	case match >= 0:
		return &s.opts.users[match], nil
	default:
		return nil, errBadToken
	}
}

// sees reports whether u may see the objects of project id: always for the
// service caller (nil), else when granted directly or through a group in
// the project's group_access.
func (s *Server) sees(u *User, project string) bool {
	if u == nil {
		return true
	}
	if slices.Contains(u.Projects, AllProjects) {
		return true
	}
	if project == "" {
		return false
	}
	if slices.Contains(u.Projects, project) {
		return true
	}
	if len(u.Groups) == 0 {
		return false
	}
	_, n := s.settings.page(1, 1, func(ps *ambientv1.ProjectSettings) bool {
		return ps.GetProjectId() == project && grantsGroup(ps.GetGroupAccess(), u.Groups)
	}, nil)
	return n > 0
}

// visibleProjects returns whether u sees a project, computed once for a
// list call and before it: the list's filter runs under a store lock, and
// finding group grants reads the settings store.
func (s *Server) visibleProjects(u *User) func(project string) bool {
	if slices.Contains(u.Projects, AllProjects) {
		return func(string) bool { return true }
	}
	set := map[string]bool{}
	for _, p := range u.Projects {
		set[p] = true
	}
	if len(u.Groups) > 0 {
		items, _ := s.settings.page(1, math.MaxInt32, func(ps *ambientv1.ProjectSettings) bool {
			return grantsGroup(ps.GetGroupAccess(), u.Groups)
		}, nil)
		for _, ps := range items {
			set[ps.GetProjectId()] = true
		}
	}
	return func(p string) bool { return p != "" && set[p] }
}

// grantsGroup reports whether a group_access JSON list names one of groups.
// Malformed JSON grants nothing.
func grantsGroup(groupAccess string, groups []string) bool {
	var entries []struct {
		Group string `json:"group"`
	}
	if json.Unmarshal([]byte(groupAccess), &entries) != nil {
		return false
	}
	for _, e := range entries {
		if e.Group != "" && slices.Contains(groups, e.Group) {
			return true
		}
	}
	return false
}
