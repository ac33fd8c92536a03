// Package memapi is an in-memory ambient API server (gRPC and a REST subset)
// for tests and the dev stack. It behaves like the real ambient-api-server as
// observed (see shared/design/UPSTREAM-BEHAVIOUR.md), so tests against it
// prove something about production:
//
//   - Watch streams send no snapshot, no heartbeat and no response headers
//     until the first event (SendHeader is never called). CREATED/UPDATED
//     carry the object read when the event is sent: a burst of updates can
//     arrive as several UPDATED events showing the final state, and an object
//     deleted before the send makes its event vanish. DELETED carries only
//     resource_id and is sent for every delete call, even of unknown ids.
//   - Each watcher has a 256 event buffer; a slow reader silently loses the
//     events beyond it (counted by Server.Dropped). On shutdown, and on
//     EndWatches, streams end with a clean EOF.
//   - Lists are in creation order. Page < 1 becomes 1, size < 1 or > 500
//     becomes 20; metadata.size is the number of items on the page and
//     total the full count.
//   - Watch events, lists and gets carry timestamps truncated to
//     microseconds (database precision); responses to mutations carry
//     nanoseconds.
//   - Session create fills llm_model "sonnet", llm_temperature 0.7,
//     llm_max_tokens 4000 and kube_cr_name = id. Ids are 27 character
//     base62 strings (mixed case, like KSUIDs). A project's id is its name;
//     a taken name gives AlreadyExists. Sessions may name unknown projects.
//     Deleting an unknown id succeeds.
//   - UpdateSessionStatus accepts only the seven phases (else
//     InvalidArgument) and sets only the fields present.
//   - With WithToken, every call (streams included) needs
//     "authorization: Bearer <token>", else Unauthenticated / HTTP 401. The
//     standard gRPC health and reflection services need no token.
//
// Fault injection for tests: EndWatches, FailNext, SetSendDelay,
// SetListHook, CallCount, Dropped.
//
// # REST subset
//
// Under /api/ambient/v1 (BasePath), for each of sessions, projects and
// project_settings:
//
//	GET    /<collection>?page=N&size=M   list (same clamps as gRPC)
//	GET    /<collection>/{id}
//	POST   /<collection>                 body: Create<X>Request, 201
//	PATCH  /<collection>/{id}            body: Update<X>Request (id from the path)
//	DELETE /<collection>/{id}            204, also for unknown ids
//
// and for sessions POST /sessions/{id}/start (phase Pending), POST
// /sessions/{id}/stop (phase Stopping) and PATCH /sessions/{id}/status (body:
// UpdateSessionStatusRequest).
//
// GET /healthcheck answers 200 {"status":"ok"} without a token.
//
// Bodies are protojson, not the real server's OpenAPI shapes: responses use
// the proto field names (snake_case, UseProtoNames), so an object looks like
// {"metadata": {"id": ..., "created_at": "RFC 3339"}, "name": ..., "llm_model": ...}
// and a list like {"items": [...], "metadata": {"page": 1, "size": 2, "total": 2}};
// zero values are omitted. Requests accept snake_case or lowerCamelCase names
// and reject unknown fields. Errors are {"error": "..."} with 400, 401, 404,
// 409 (or 500). Example:
//
//	curl -H "Authorization: Bearer $AMBIENT_API_TOKEN" \
//	  -d '{"name":"demo","prompt":"hello"}' localhost:8000/api/ambient/v1/sessions
package memapi
