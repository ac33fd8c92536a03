package proc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// pollInterval is how often WaitReady probes.
const pollInterval = 200 * time.Millisecond

// Probe reports nil once a child is ready.
type Probe func(ctx context.Context) error

// ErrWillNotBeReady ends WaitReady at once when a Probe's error wraps it:
// the child will not become ready however long it is given (it crash-loops).
var ErrWillNotBeReady = errors.New("crash loop")

// WaitReady calls probe every 200 ms until it returns nil, ctx is done or
// the deadline passes; the error then carries the probe's last answer. A
// probe error wrapping ErrWillNotBeReady is returned at once.
func WaitReady(ctx context.Context, probe Probe, deadline time.Time) error {
	var last error
	for time.Now().Before(deadline) {
		if last = probe(ctx); last == nil {
			return nil
		}
		if errors.Is(last, ErrWillNotBeReady) {
			return last
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
	if last == nil {
		last = errors.New("deadline already passed")
	}
	return fmt.Errorf("not ready after the deadline: %w", last)
}

// HTTPProbe is a Probe that wants 200 from GET url, with "Authorization:
// Bearer <token>" when token is set.
func HTTPProbe(client *http.Client, url, token string) Probe {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("build readiness request: %w", err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("get %s: %w", url, err)
		}
		_ = resp.Body.Close() //nolint:errcheck // only the status matters
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %s", url, resp.Status)
		}
		return nil
	}
}
