package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// HealthPolicy says how a new runner's /health is polled: up to Attempts
// probes Interval apart (500 ms x 30 by default). The first probes come
// sooner (FirstDelay, doubling up to Interval) so a fast runner is seen as
// Running quickly; the deadline stays Interval x Attempts.
type HealthPolicy struct {
	Host       string // probed host, normally 127.0.0.1
	Interval   time.Duration
	Attempts   int
	FirstDelay time.Duration // 0 = Interval (no fast start)
}

// Deadline is the total time a runner gets to become healthy.
func (h HealthPolicy) Deadline() time.Duration { return h.Interval * time.Duration(h.Attempts) }

// WaitHealthy polls http://<host>:<port>/health until it answers 200
// (with a body that names no other session: see probe) and returns how
// long that took. It returns [ErrHealthTimeout] after the policy's
// deadline, [ErrExited] if the process ends first, or ctx's error.
func (p *Process) WaitHealthy(ctx context.Context, client *http.Client, h HealthPolicy) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(h.Deadline())
	url := "http://" + net.JoinHostPort(h.Host, strconv.Itoa(p.Port)) + "/health"
	first := h.FirstDelay
	if first <= 0 || first > h.Interval {
		first = h.Interval
	}
	// Probe delays: first, doubling up to the interval, no jitter (the
	// deadline is the policy's, not the backoff's).
	b := &backoff.ExponentialBackOff{InitialInterval: first, Multiplier: 2, MaxInterval: h.Interval}
	b.Reset()
	t := time.NewTimer(b.NextBackOff())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("health of %s: %w", p.SessionID, ctx.Err())
		case <-p.done:
			return time.Since(start), fmt.Errorf("health of %s: %w", p.SessionID, ErrExited)
		case <-t.C:
		}
		if probe(ctx, client, url, p.SessionID, h.Interval) {
			return time.Since(start), nil
		}
		if !time.Now().Before(deadline) {
			return time.Since(start), fmt.Errorf("health of %s after %v: %w", p.SessionID, h.Deadline(), ErrHealthTimeout)
		}
		t.Reset(min(b.NextBackOff(), time.Until(deadline)))
	}
}

// maxHealthBody bounds the /health body read by a probe.
const maxHealthBody = 4 << 10

// probe reports whether url answers 200 for session id. A body naming
// another session ({"session_id": ...}, as the demo runner's does) is not
// healthy: the port answers for some other runner (one that outlived its
// replica, a peer's on an overlapping range), not for this one, which may
// still be starting or have failed to bind; Running would route the
// session's clients to the wrong runner. A body without a session id
// cannot tell and counts, as in the peers' probe (claim.Claims.answers).
func probe(ctx context.Context, client *http.Client, url, id string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, max(timeout, 200*time.Millisecond))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer func() {
		// Draining lets the connection be reused; the answer is decided.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxHealthBody))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	var body struct {
		SessionID string `json:"session_id"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxHealthBody)).Decode(&body); err == nil && body.SessionID != "" && body.SessionID != id {
		return false
	}
	return true
}
