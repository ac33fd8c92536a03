// Package memapi is an in-memory ambient API server (gRPC and REST)
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
//   - Each watcher has a 256 event buffer, fed by the changes of all four
//     resources (the stream skips the others' as it takes them off); a slow
//     reader silently loses the changes beyond it (counted by
//     Server.Dropped), so a burst of project changes can cost a session
//     watcher session events. On shutdown, and on
//     EndWatches, streams end with a clean EOF.
//   - Lists are in database order: creation order, except that an update
//     moves the object to the end (the real server lists without ORDER BY,
//     and PostgreSQL writes an updated row's new version at the end of a
//     full table). Pages are offsets into that order, so paging while
//     objects are updated or deleted can skip one or show one twice. Page
//     < 1 becomes 1, size < 1 or > 500 becomes 20; metadata.size is the
//     number of items on the page and total the full count.
//   - Watch events, lists and gets carry timestamps truncated to
//     microseconds (database precision); responses to mutations carry
//     nanoseconds where the mutation set the time (a create's times, an
//     update's updated_at and the times it sent), microseconds elsewhere
//     (an update answers with the row it read, changed).
//   - Session create fills llm_model "sonnet" (also for an empty one),
//     llm_temperature 0.7, llm_max_tokens 4000 and kube_cr_name = id. Ids
//     are 27 character base62 strings (mixed case, like KSUIDs). A
//     project's id is its name; a taken name gives AlreadyExists, for a
//     create ("This Project already exists") and for a rename (the id
//     stays; "Changes to Project conflict with existing records"). A
//     project has at most one settings object (AlreadyExists), and
//     settings must name a project (see below). Sessions may name unknown
//     projects. Deleting an unknown id succeeds.
//   - Deletes are soft, as the real server's (read from its code): a
//     deleted object's id and unique key (a project's name, a settings
//     object's project_id) stay taken for good, so re-creating a deleted
//     project's name, or renaming onto it, is AlreadyExists / 409 id 6
//     with the reasons above. A session's parent_session_id ("" too) must
//     name a session, a deleted one will do (the real foreign key): else
//     Internal / 500 id 9 `Unable to create Session: ERROR: insert or
//     update on table "sessions" violates foreign key constraint
//     "fk_sessions_parent_session_id" (SQLSTATE 23503)`, "update" for an
//     update. Likewise settings must name a project (project_id, ""
//     too), a deleted one will do: else `Unable to create
//     ProjectSettings: ERROR: insert or update on table
//     "project_settings" violates foreign key constraint
//     "fk_project_settings_project_id" (SQLSTATE 23503)`.
//   - Project names must be DNS-1123 labels starting with a letter, 2 to
//     63 characters (InvalidArgument / REST 400 id 8), over REST and gRPC.
//   - Create/Update requests are copied into the objects by field name:
//     their numbers differ from the objects' (Create*Request numbers from
//     1), as on the real server. created_by_user_id is never copied: a
//     create sets it to the calling user's name (multi-user mode) and
//     leaves it unset for the service token, as the real handlers do from
//     the caller's identity; UpdateSessionRequest has no such field.
//   - UpdateSessionStatus (and REST PATCH /sessions/{id}/status) accepts
//     only the seven phases of libs/session (else InvalidArgument) and sets
//     only the fields present, each as sent ("" and 0 included: the only
//     way to clear one); conditions are replaced whole, never merged.
//   - With WithToken, every call (streams included) needs
//     "authorization: Bearer <token>", else Unauthenticated / HTTP 401,
//     except the two calls the real server exempts: grpc.health.v1
//     Health/Check and v1alpha ServerReflectionInfo.
//   - gRPC errors carry the real server's reasons ("Session with id='x' not
//     found", "This Project already exists", "name is required"); APIError
//     is the error type behind them.
//
// UserService and the users routes serve the API's User objects (username,
// name, optional email), read from the real server's plugins/users, not
// measured: 27 character ids, kind "User", href /api/ambient/v1/users/<id>,
// list kind "UserList"; a gRPC create needs username and then name
// (InvalidArgument "username is required", "name is required", at most 255
// bytes each), a REST create only both keys ("no value given for required
// property username", 400 id 17) and checks no value; a username may be
// taken twice (no unique index); an update or PATCH sets username, name
// and email as sent, unchecked; watches and deletes as for every kind. They
// are not the callers of the multi-user mode below (type User), and that
// mode does not narrow them: the real users routes keep rh-trex's default
// authorization, which wants an identity only.
//
// Multi-user mode (WithUsers, MEMAPI_USERS_FILE) is ours, not the real
// server's: per-user tokens from a file, each granted projects directly or
// through a group in a project's group_access. Over REST a user sees only
// its projects' objects (lists filtered, a GET of another 404 and a change
// 403 with the bodies of the real server's authorization middleware); over
// gRPC users authenticate and nothing is narrowed, as the real gRPC
// handlers authorize nothing. Its creates, over both, get
// created_by_user_id = its name. The service token (WithToken) keeps seeing everything.
//
// Fault injection for tests: EndWatches, StartOutage (the whole API down
// for a while, as the real server restarting: watches ended, every
// connection closed and new ones refused until it ends, state kept),
// FailNext, SetSendDelay, SetListHook, PurgeDeleted (deleted objects'
// ids and keys free again, as a database purge of the soft-deleted rows),
// CallCount, Dropped; FaultsHandler serves EndWatches and StartOutage over
// HTTP for a memapi process. WatchPending and WatchSent tell a test
// when the server has no watch event left to send, so it can wait for a
// quiet system instead of guessing (kube-reconciler's harness.quiesce).
//
// # REST
//
// Handler serves the real server's REST API under /api/ambient/v1
// (BasePath) in its JSON (package restapi), for each of sessions, projects,
// project_settings and users:
//
//	GET    /<collection>?page=N&size=M&search=Q   list, 200
//	GET    /sessions?project_id=P                 the sessions of project P (and the search);
//	                                              400 id 8 unless P is letters, digits, _ and -
//	GET    /<collection>/{id}                     200, 404 id 7
//	POST   /<collection>                          201; 400 id 17 for bad JSON or a missing
//	                                              required property (name; project_id;
//	                                              username, then name)
//	PATCH  /<collection>/{id}                     200
//	DELETE /<collection>/{id}                     204, also for an id already gone
//	POST   /sessions/{id}/start                   from "", Stopped, Failed, Completed: Pending
//	POST   /sessions/{id}/stop                    from Pending, Creating, Running: Stopping
//	PATCH  /sessions/{id}/status                  200; the status write-back (UpdateSessionStatus's
//	                                              checks: 400 id 8 for no status field or a bad
//	                                              phase, 404 id 7); other keys are ignored
//
// A refused start or stop is 409 id 6 with the real reason (`cannot start
// session in phase "Pending"; must be empty, Stopped, Failed, or
// Completed`); start and stop exist only over REST, as on the real server.
// Objects are flat ({"id", "kind", "href", "created_at", "updated_at",
// ...fields}, unset optional fields absent), lists are {"kind":
// "SessionList", "page", "size", "total", "items"}, errors are {"kind":
// "Error", "id", "code": "ambient-api-server-<id>", "href", "reason",
// "operation_id"}. Without a token the answer is a plain-text 401 "missing
// authorization header" (http.Error's, ending in a newline). Request
// bodies are flat objects with proto field names, read as the real
// handlers read them (body.go): encoding/json into a Go model, so keys
// match case-insensitively ({"PROMPT": "hi"} sets prompt), invalid UTF-8
// becomes U+FFFD, a number field takes only a JSON number of its Go type
// (a quoted number, "NaN" or "Infinity", or an integer written 1e2 or 5.0
// is a 400 id 17; protojson would take them), and a body of null leaves
// the model empty without any check (rh-trex's handlers.Handle): a create
// goes on with empty fields, a PATCH sets nothing. A create decodes like
// the real server's generated OpenAPI model: the required property by its
// exact key, then unknown keys are a 400 id 17, and a non-empty "id" is a
// 400 id 8 "id must be empty" (its handlers' ValidateEmpty); it keeps what
// the plugin's ConvertX copies: the gRPC create request's fields, a
// project's status, and the client's created_at and updated_at (read-only
// keys such as phase are ignored). A project or settings body with
// created_at and no updated_at ends the connection without an answer (the
// real handler dereferences nil). A PATCH decodes like its PatchRequest
// model (plain encoding/json): unknown keys, "id", read-only keys and a
// session's project_id (not in SessionPatchRequest) are ignored; a known
// key of the wrong type is a 400 id 17. Bodies over 64 MiB are refused
// (memapi's guard; the real server reads any size). These come from the
// upstream source (rh-trex handlers, plugin presenters, generated models),
// not from a measurement. search is a subset of the real server's TSL
// (search.go: =, !=, like, ilike, in, and, or, parentheses): a search the
// real parser refuses (tsl.go, checked against it) is its 400 id 21
// "Failed to parse search query: <the search>", quoted as the list saw it
// (trimmed of spaces; on the sessions list inside "project_id = 'P' and
// (...)" when project_id is given, as the real handler pastes it), and
// one it takes that memapi cannot evaluate is memapi's own 400 id 23.
// orderBy ("name desc, created_at") orders a list before it is paged
// (orderby.go): an item rh-trex refuses is 400 id 21 "bad order value
// '<item>'", an unknown column PostgreSQL's refusal as the real server
// sends it (500 id 9 "Unable to list resources: ERROR: column \"x\" does
// not exist (SQLSTATE 42703)"), and SQL other than column names memapi's
// own 400 id 23. A fields parameter that is not blank ends the connection
// of a list without an answer, as the real handlers panic on it.
// testdata/rest_golden.json is the real server's answers to a script of
// calls, written from the measured facts; TestRESTGolden holds memapi to it.
//
// Read from the real server's code, not measured: the other 401 bodies of
// its bearer middleware ("invalid authorization header format", "empty
// bearer token", "invalid bearer token"), the status route, the body rules
// above, the sessions list's project_id parameter, orderBy and fields,
// and the project-name length rule. What was not measured and is memapi's choice (see
// docs/architecture.md): unknown routes (404 id 7) and methods (405 id
// 10), searches memapi cannot evaluate (400 id 23), unparsable page/size
// (read as 0, then clamped), the REST page-size clamps (the gRPC ones), and a session
// created over REST with "name": "" (accepted).
//
// GET /healthcheck answers 200 {"status":"ok"} without a token (the real
// server serves it on its own port, 4434; its bearer middleware also lets
// /health and /metrics through, which memapi does not serve).
//
// Example:
//
//	curl -H "Authorization: Bearer $AMBIENT_API_TOKEN" \
//	  -d '{"name":"demo","prompt":"hello"}' localhost:8000/api/ambient/v1/sessions
package memapi
