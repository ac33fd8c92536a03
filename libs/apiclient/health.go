package apiclient

import (
	"context"
	"fmt"

	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Check asks the server's standard gRPC health service whether it is
// SERVING (for readiness checks). It returns ErrNotServing wrapped when the
// server answers with another status, or the wrapped call error. Without a
// ctx deadline the default timeout applies.
func (c *Client) Check(ctx context.Context) error {
	resp, err := healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("api health check: %w", err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("api health check: %w: %s", ErrNotServing, s)
	}
	return nil
}

// Reachable reports, without a call, whether the client can reach the API:
// an error wrapping ErrUnreachable while its connection is in
// TRANSIENT_FAILURE (the last attempt to connect failed: the API is down,
// or cut off from this process), nil otherwise. An idle connection (none
// made yet, or one the server or the network closed) is asked to connect,
// so a lost API shows within a connect attempt, not at the next call; gRPC
// itself retries a failed one (at most ReconnectMaxDelay apart) and passes
// again once connected. It never blocks: the consumer groups ask it at
// every heartbeat (group.Config.Ready). A connection that hangs without
// closing (packets dropped) reads as reachable until gRPC gives it up.
func (c *Client) Reachable() error {
	switch s := c.conn.GetState(); s {
	case connectivity.TransientFailure:
		return fmt.Errorf("api connection %s: %w", s, ErrUnreachable)
	case connectivity.Idle:
		c.conn.Connect()
	}
	return nil
}
