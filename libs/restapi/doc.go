// Package restapi is the JSON of the ambient API's REST interface
// (BasePath, /api/ambient/v1) as the real ambient-api-server speaks it, for
// both sides: the in-memory API (libs/memapi) writes it and apiclient's REST
// client reads it. The facts come from shared/design/UPSTREAM-BEHAVIOUR.md
// ("The whole wire contract, and the REST API"):
//
//   - Objects are flat: {"id", "kind", "href", "created_at", "updated_at",
//     ...fields} with the proto field names; unset optional fields are
//     absent; required scalars (name, project_id) are always present.
//     MarshalObject and UnmarshalObject convert between that and the
//     ambient.v1 messages, whose ObjectReference metadata holds the first
//     five keys.
//   - Lists are {"kind": "SessionList", "page", "size", "total", "items"}
//     (List).
//   - Errors are {"kind": "Error", "id": "7", "code":
//     "ambient-api-server-7", "href": "/api/ambient/v1/errors/7", "reason",
//     "operation_id"} (Error, NewError); the ids are the real server's.
//
// Timestamps are RFC 3339 strings (protojson's form); the real server's
// digits and zone suffix may differ, the type does not.
//
// Everything here is safe for concurrent use.
package restapi
