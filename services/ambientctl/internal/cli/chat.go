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
	target := o.proxyURL + "/sessions/" + url.PathEscape(session) + "/agui/run"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if o.proxyToken != "" {
		req.Header.Set("Authorization", "Bearer "+o.proxyToken)
	}
	// No client timeout: a run streams for as long as the agent works; ctx
	// (Ctrl-C) ends it. The request carries the command's traceparent, so
	// the chat can be followed through the proxy into the runner.
	resp, err := o.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("reach the agui-proxy at %s (is the dev stack running? or pass --proxy): %w", o.proxyURL, err)
	}
	defer resp.Body.Close() //nolint:errcheck // read-only body
	if resp.StatusCode != http.StatusOK {
		return proxyError(resp, session)
	}
	r := sse.NewReader(resp.Body)
	for {
		frame, err := r.Next()
		if errors.Is(err, io.EOF) {
			return errors.New("the run ended without RUN_FINISHED")
		}
		if err != nil {
			return fmt.Errorf("read run stream: %w", err)
		}
		var ev agEvent
		if err := json.Unmarshal([]byte(frame.Data), &ev); err != nil {
			continue // not an AG-UI JSON event; the client ignores it too
		}
		switch ev.Type {
		case "TEXT_MESSAGE_CONTENT":
			if _, err := io.WriteString(w, ev.Delta); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		case "TEXT_MESSAGE_END":
			if _, err := io.WriteString(w, "\n"); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		case "RUN_ERROR":
			return fmt.Errorf("run failed: %s", ev.Message)
		case "RUN_FINISHED":
			return nil
		}
	}
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
