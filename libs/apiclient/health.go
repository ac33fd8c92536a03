package apiclient

import (
	"context"
	"fmt"

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
