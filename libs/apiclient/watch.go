package apiclient

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// The Watch methods open a watch stream that lives until ctx is done or the
// server ends it (Recv returns io.EOF on a clean end). They return as soon
// as the request is sent: they never wait for response headers, which the
// real server only sends with the first event. The stream has no snapshot
// and no resume point: list after (re)connecting to learn what changed.
// Errors of Recv are the raw gRPC status errors (and io.EOF).

// WatchSessions opens a session watch stream.
func (c *Client) WatchSessions(ctx context.Context) (grpc.ServerStreamingClient[ambientv1.SessionWatchEvent], error) {
	st, err := c.sessions.WatchSessions(ctx, &ambientv1.WatchSessionsRequest{})
	if err != nil {
		return nil, fmt.Errorf("watch sessions: %w", err)
	}
	return st, nil
}

// WatchProjects opens a project watch stream.
func (c *Client) WatchProjects(ctx context.Context) (grpc.ServerStreamingClient[ambientv1.ProjectWatchEvent], error) {
	st, err := c.projects.WatchProjects(ctx, &ambientv1.WatchProjectsRequest{})
	if err != nil {
		return nil, fmt.Errorf("watch projects: %w", err)
	}
	return st, nil
}

// WatchProjectSettings opens a project settings watch stream.
func (c *Client) WatchProjectSettings(ctx context.Context) (grpc.ServerStreamingClient[ambientv1.ProjectSettingsWatchEvent], error) {
	st, err := c.settings.WatchProjectSettings(ctx, &ambientv1.WatchProjectSettingsRequest{})
	if err != nil {
		return nil, fmt.Errorf("watch project settings: %w", err)
	}
	return st, nil
}
