package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/ambient-code/control-plane/libs/sse"
)

func chatCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "chat SESSION MESSAGE",
		Short: "Run one AG-UI turn through the agui-proxy and stream the assistant's answer",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.chat(cmd.Context(), cmd.OutOrStdout(), args[0], args[1])
		},
	}
}

// runAgentInput is the AG-UI RunAgentInput body.
type runAgentInput struct {
	ThreadID       string            `json:"threadId"`
	RunID          string            `json:"runId"`
	State          map[string]string `json:"state"`
	Messages       []agMessage       `json:"messages"`
	Tools          []struct{}        `json:"tools"`
	Context        []struct{}        `json:"context"`
	ForwardedProps map[string]string `json:"forwardedProps"`
}

type agMessage struct {
	ID      string `json:"id"`
	Role    string `json:"role"`
	Content string `json:"content"`
}

// agEvent holds the AG-UI event fields chat prints.
type agEvent struct {
	Type    string `json:"type"`
	Delta   string `json:"delta"`
	Message string `json:"message"`
}

func (o *options) chat(ctx context.Context, w io.Writer, session, message string) error {
	// The command's span and the request's name the session.
	ctx = tagSession(ctx, session, "")
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	body, err := json.Marshal(runAgentInput{
		ThreadID: session, RunID: "run-" + stamp,
		State:    map[string]string{},
		Messages: []agMessage{{ID: "msg-" + stamp, Role: "user", Content: message}},
		Tools:    []struct{}{}, Context: []struct{}{}, ForwardedProps: map[string]string{},
	})
	if err != nil {
		return fmt.Errorf("encode run input: %w", err)
	}
	resp, err := o.openStream(ctx, http.MethodPost, session, "/agui/run", body)
	if err != nil {
		return err
	}
	defer resp.Body.Close() //nolint:errcheck // read-only body
	return printRuns(resp.Body, w, 1, false)
}

// followCmd streams a session's events (/agui/events): what every run of
// the session says, whoever started it.
func followCmd(o *options) *cobra.Command {
	var runs int
	cmd := &cobra.Command{
		Use:   "follow SESSION",
		Short: "Stream what every run of a session says, whoever started it, until Ctrl-C (or --runs runs ended)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := nonNegative("--runs", runs, "no limit"); err != nil {
				return err
			}
			return o.follow(cmd.Context(), cmd.OutOrStdout(), args[0], runs)
		},
	}
	cmd.Flags().IntVar(&runs, "runs", 0, "end after this many runs ended (0: follow until Ctrl-C)")
	return cmd
}

func (o *options) follow(ctx context.Context, w io.Writer, session string, runs int) error {
	ctx = tagSession(ctx, session, "")
	resp, err := o.openStream(ctx, http.MethodGet, session, "/agui/events", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close() //nolint:errcheck // read-only body
	err = printRuns(resp.Body, w, runs, true)
	if ctx.Err() != nil {
		return nil // Ctrl-C: following ends here
	}
	return err
}

// openStream sends an AG-UI request for session's route through the
// agui-proxy and returns its event stream, or the proxy's refusal as an
// error. There is no client timeout: a stream lasts as long as the agent
// works, and ctx (Ctrl-C) ends it. The request carries the command's
// traceparent, so it can be followed through the proxy into the runner.
func (o *options) openStream(ctx context.Context, method, session, route string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, joinURL(o.proxyURL, "/sessions/"+url.PathEscape(session)+route), rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "text/event-stream")
	if o.proxyToken != "" {
		req.Header.Set("Authorization", "Bearer "+o.proxyToken)
	}
	resp, err := o.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the agui-proxy at %s (is the dev stack running? or pass --proxy): %w", o.proxyURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close() //nolint:errcheck // read-only body
		if err := redirected(resp, "--proxy"); err != nil {
			return nil, err
		}
		return nil, proxyError(resp, session)
	}
	return resp, nil
}

// printRuns prints the assistant's text of the AG-UI runs on body until
// runs of them ended (0: until the stream ends). A failed run ends the
// printing with its error, unless keepGoing (follow), which prints it and
// counts the run as ended.
func printRuns(body io.Reader, w io.Writer, runs int, keepGoing bool) error {
	r := sse.NewReader(body)
	ended := 0
	for runs == 0 || ended < runs {
		frame, err := r.Next()
		if errors.Is(err, io.EOF) {
			if keepGoing {
				return errors.New("the session's event stream ended (its runner stopped?)")
			}
			return errors.New("the run ended without RUN_FINISHED")
		}
		if err != nil {
			return fmt.Errorf("read run stream: %w", err)
		}
		var ev agEvent
		if err := json.Unmarshal([]byte(frame.Data), &ev); err != nil {
			continue // not an AG-UI JSON event; the client ignores it too
		}
		var out string
		switch ev.Type {
		case "TEXT_MESSAGE_CONTENT":
			out = ev.Delta
		case "TEXT_MESSAGE_END":
			out = "\n"
		case "RUN_ERROR":
			if !keepGoing {
				return fmt.Errorf("run failed: %s", ev.Message)
			}
			out = "run failed: " + ev.Message + "\n"
			ended++
		case "RUN_FINISHED":
			ended++
		}
		if _, err := io.WriteString(w, out); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	return nil
}

func proxyError(resp *http.Response, session string) error {
	var body struct {
		Error string `json:"error"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // best effort: the status says enough
	if json.Unmarshal(raw, &body) != nil || body.Error == "" {
		body.Error = string(bytes.TrimSpace(raw))
	}
	switch resp.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("session %q has no runner registered with the proxy (is it Running? see `ambientctl sessions get %s`): %s", session, session, body.Error)
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("the agui-proxy refused the request (set --proxy-token or $%s): %s", EnvProxyToken, body.Error)
	case http.StatusBadGateway:
		return fmt.Errorf("the session's runner is not answering: %s", body.Error)
	default:
		return fmt.Errorf("agui-proxy answered %s: %s", resp.Status, body.Error)
	}
}
