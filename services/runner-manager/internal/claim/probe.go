package claim

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/ambient-code/control-plane/libs/registry"
)

// maxHealthBody bounds the /health body read by a probe.
const maxHealthBody = 4 << 10

// answers reports whether the runner registered in ep still serves: GET
// /health answers 200 within the probe timeout. A body naming another
// session ({"session_id": ...}, as the demo runner's does) means the port
// now belongs to some other runner, which proves nothing about ep's; a
// body without a session id cannot tell and counts as an answer (see the
// package doc for what that leaves).
func (c *Claims) answers(ctx context.Context, ep registry.Endpoint) bool {
	if !ep.Routable() {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ep.Addr()+"/health", nil)
	if err != nil {
		return false
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false
	}
	defer func() {
		// Draining lets nothing linger; the answer is already decided.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxHealthBody))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	var body struct {
		SessionID string `json:"session_id"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxHealthBody)).Decode(&body); err == nil && body.SessionID != "" && body.SessionID != ep.SessionID {
		return false
	}
	return true
}
