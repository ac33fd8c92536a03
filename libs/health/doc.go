// Package health serves a service's operational HTTP endpoints with chi:
//
//   - GET /healthz: liveness; 200 {"status":"ok"} while the process serves.
//   - GET /readyz: readiness; runs every named [Check] concurrently, each
//     under its own timeout, and answers 200 with per-check results or 503
//     naming the failing checks. The body is a JSON [Report].
//   - GET /metrics: the Prometheus registry given in [Options] (usually
//     telemetry.Providers.Registry).
//
// Services mount their own routes on [Server.Router] (event-tally mounts
// /tally) before calling [Server.Run].
package health
