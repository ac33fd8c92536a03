package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

// ErrRefused is a start or stop the API refused (409: the session is in a
// phase the transition is not allowed from). It is not a change.
var ErrRefused = errors.New("transition refused by the API")

// ErrUnavailable is a call the API answered 503 (or gRPC Unavailable), or
// could not be sent because the server refused or closed the connection,
// as a restarting server does (memapi's outage closes its listeners and
// connections): it is down (an API outage), the change was not made.
var ErrUnavailable = errors.New("API unavailable")

// restPhases starts and stops sessions through the API's REST endpoints:
// the real ambient-api-server has no gRPC call for them, and only these
// apply its phase guards. It is the harness' only use of the REST API, and
// it reads nothing but the status code, so a change of the REST shapes
// (issue 11) touches at most the two paths below.
type restPhases struct {
	base  string // e.g. http://127.0.0.1:8000/api/ambient/v1
	token string
	hc    *http.Client
}

func newRESTPhases(restURL, token string) *restPhases {
	return &restPhases{base: restURL + "/api/ambient/v1", token: token, hc: &http.Client{Timeout: 10 * time.Second}}
}

// Start asks for a runner: POST /sessions/{id}/start (phase Pending).
func (r *restPhases) Start(ctx context.Context, id string) error {
	return r.post(ctx, "/sessions/"+url.PathEscape(id)+"/start")
}

// Stop asks to stop the runner: POST /sessions/{id}/stop (phase Stopping).
func (r *restPhases) Stop(ctx context.Context, id string) error {
	return r.post(ctx, "/sessions/"+url.PathEscape(id)+"/stop")
}

func (r *restPhases) post(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+path, nil)
	if err != nil {
		return fmt.Errorf("build POST %s: %w", path, err)
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := r.hc.Do(req)
	if err != nil {
		if connectionLost(err) {
			return fmt.Errorf("POST %s: %w: %w", path, ErrUnavailable, err)
		}
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()                                //nolint:errcheck // only the status matters
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024)) //nolint:errcheck // for the error message only
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusConflict:
		return fmt.Errorf("POST %s: %w: %s", path, ErrRefused, body)
	case resp.StatusCode == http.StatusServiceUnavailable:
		return fmt.Errorf("POST %s: %w: %s: %s", path, ErrUnavailable, resp.Status, body)
	default:
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, body)
	}
}

// connectionLost reports whether err is a connection the server refused,
// reset or closed before it answered: what a client of a server that is
// restarting sees.
func connectionLost(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
