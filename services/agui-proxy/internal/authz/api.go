package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/ambient-code/control-plane/libs/restapi"
)

// maxSessionBytes bounds the API's answer read to check its id.
const maxSessionBytes = 4 << 20

// APIConfig says where the ambient API's REST API is.
type APIConfig struct {
	// URL is the API's base URL (AMBIENT_API_SERVER_URL), e.g.
	// http://ambient-api-server:8000; sessions are read under
	// /api/ambient/v1/sessions/{id}.
	URL *url.URL
	// Transport defaults to a clone of http.DefaultTransport without an
	// HTTP proxy (the callers' tokens go straight to the API).
	Transport http.RoundTripper
}

// apiAuthority asks the ambient API with the caller's own credentials.
type apiAuthority struct {
	base   *url.URL
	client *http.Client
}

// NewAPI returns an Authorizer that allows a request iff the ambient API
// returns the session to the caller's Authorization header. It returns
// ErrInvalidConfig without an http(s) URL.
func NewAPI(api APIConfig, cfg Config) (*Authorizer, error) {
	if api.URL == nil || (api.URL.Scheme != "http" && api.URL.Scheme != "https") || api.URL.Host == "" {
		return nil, fmt.Errorf("%w: API URL %v", ErrInvalidConfig, api.URL)
	}
	rt := api.Transport
	if rt == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		rt = tr
	}
	a := &apiAuthority{base: api.URL, client: &http.Client{
		Transport: rt,
		// A redirect would carry the caller's token elsewhere; none is
		// expected from a GET of a session, so it counts as no answer.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	return newAuthorizer(ModeAPI, a, cfg)
}

// key: the API judges the credentials, and one GET answers every verb.
func (a *apiAuthority) key(req Request) []byte { return []byte(req.Authorization) }

func (a *apiAuthority) decide(ctx context.Context, req Request) (Decision, error) {
	u := a.base.JoinPath(restapi.BasePath, "sessions", req.SessionID)
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Decision{}, fmt.Errorf("%w: build request: %w", ErrUnavailable, err)
	}
	if req.Authorization != "" {
		hr.Header.Set("Authorization", req.Authorization)
	}
	hr.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(hr)
	if err != nil {
		return Decision{}, fmt.Errorf("%w: GET session %s: %w", ErrUnavailable, req.SessionID, redactErr(err))
	}
	defer func() {
		// Read to the limit or abandoned; a close error changes nothing.
		_ = resp.Body.Close()
	}()
	switch resp.StatusCode {
	case http.StatusOK:
		return a.allowed(resp.Body, req.SessionID)
	case http.StatusUnauthorized:
		return Decision{}, ErrUnauthenticated
	case http.StatusForbidden, http.StatusNotFound:
		// The real server answers a session the caller may not read with
		// 404 (as if absent) and a forbidden action with 403.
		return Decision{Reason: fmt.Sprintf("the ambient API does not give this caller session %s", req.SessionID)}, nil
	default:
		return Decision{}, fmt.Errorf("%w: GET session %s: status %d", ErrUnavailable, req.SessionID, resp.StatusCode)
	}
}

// allowed checks that a 200 is the session asked for: a misconfigured URL
// answering 200 to anything (a catch-all frontend) must not allow.
func (a *apiAuthority) allowed(body io.Reader, id string) (Decision, error) {
	var s struct {
		ID   string `json:"id"`
		Kind string `json:"kind"`
	}
	if err := json.NewDecoder(io.LimitReader(body, maxSessionBytes)).Decode(&s); err != nil {
		return Decision{}, fmt.Errorf("%w: GET session %s: answer is no session: %w", ErrUnavailable, id, err)
	}
	if s.ID != id || s.Kind != restapi.KindSession {
		return Decision{}, fmt.Errorf("%w: GET session %s: answer is %s %q", ErrUnavailable, id, s.Kind, s.ID)
	}
	return Decision{Allowed: true}, nil
}

// redactErr drops the URL from a client error (*url.Error prints it): the
// base URL may carry user information.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
