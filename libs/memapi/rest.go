package memapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/restapi"
	"github.com/ambient-code/control-plane/libs/telemetry"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// HealthPath answers 200 without a token (the real server serves it on a
// separate port, 4434). Its bearer middleware also lets /health and
// /metrics through without a token; memapi serves neither.
const HealthPath = "/healthcheck"

// reasonNoAuth is the plain-text 401 body without an Authorization header
// (measured). The other 401 bodies are checkCaller's errors, the real
// bearer middleware's texts (read from its code, not measured).
const reasonNoAuth = "missing authorization header"

// collection is one REST collection, generic over the object (T) and its
// update request (U). A create reads the body as a flat object T (the real
// server's generated OpenAPI model has every field of the object) and
// keeps what convert keeps of it; a PATCH reads the fields of U.
type collection[T object, U proto.Message] struct {
	s        *Server
	r        *resource[T]
	required []string // properties a create body must have, in the model's order
	// project returns the project of a stored object, projectOf the
	// project an object to create names (multi-user mode narrows by them).
	// Both nil: a kind of no project, which multi-user mode does not
	// narrow (users).
	project   func(T) string
	projectOf func(T) string
	// convert is the real handler's ConvertX: the object a create stores,
	// from the body (see convertBody).
	convert func(body T) (T, error)
	create  func(T, *User) (T, error) // the user is the caller (nil: the service token)
	update  func(U) (T, error)
	newU    func(id string) U
	// fixedOnPatch are fields of U that a REST PATCH ignores: the real
	// server's PatchRequest model lacks them (a session's project_id is
	// set at create only; over gRPC UpdateSession changes it).
	fixedOnPatch []string
	// listScope, when set, reads the list's own query parameters besides
	// page, size and search (a session list's project_id) into the search
	// (already trimmed of spaces) it returns, or refuses them; it runs
	// before the search is parsed, as the real handler adds them to the
	// search before its generic list parses it.
	listScope func(q url.Values, search string) (string, error)
	// nullColumns are columns of the real table that the wire contract
	// lacks (its reserved fields): an orderBy may name them, and here
	// they are NULL in every row.
	nullColumns []string
}

// Handler returns the REST API (chi) under BasePath, in the real server's
// JSON (package restapi); see the package doc for routes and what is
// imitated. It checks the token like the gRPC services. Changes made
// through it produce watch events. Every request is a SERVER span
// (otelhttp) joined to the caller's traceparent; a session start or stop
// names its session (ambient.object_id).
func (s *Server) Handler() http.Handler {
	var opts []otelhttp.Option
	if s.opts.tp != nil {
		opts = append(opts, otelhttp.WithTracerProvider(s.opts.tp))
	}
	return otelhttp.NewHandler(s.outageHandler(s.router()), "memapi", opts...)
}

// router is Handler's chi router.
func (s *Server) router() http.Handler {
	r := chi.NewRouter()
	r.Use(tagSpan, s.restAuth)
	// Unknown routes and methods: error objects with the upstream source's
	// ids (404 id 7, 405 id 10); the real server's answer was not measured.
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		writeError(w, &APIError{Status: http.StatusNotFound, ID: restapi.ErrorIDNotFound,
			Reason: fmt.Sprintf("The requested resource '%s' doesn't exist", req.URL.Path)})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, &APIError{Status: http.StatusMethodNotAllowed, ID: restapi.ErrorIDNotImplemented,
			Reason: "HTTP Method not implemented for this endpoint"})
	})

	r.Get(HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		// The client may be gone; there is nobody left to tell.
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})

	sess := &sessionService{r: s.sessionResource()}
	mount(r, collection[*ambientv1.Session, *ambientv1.UpdateSessionRequest]{
		s: s, r: sess.r, required: []string{"name"},
		project:   (*ambientv1.Session).GetProjectId,
		projectOf: (*ambientv1.Session).GetProjectId,
		convert: func(body *ambientv1.Session) (*ambientv1.Session, error) {
			return convertBody(body, &ambientv1.CreateSessionRequest{}, sess.r.setMeta, nil, false)
		},
		create:       sess.create,
		update:       sess.update,
		newU:         func(id string) *ambientv1.UpdateSessionRequest { return &ambientv1.UpdateSessionRequest{Id: id} },
		fixedOnPatch: []string{"project_id"},
		listScope:    sessionProjectScope,
		nullColumns:  []string{"interactive"}, // plugins/sessions/migration.go; field 9 reserved
	})
	for _, t := range []transition{startTransition, stopTransition} {
		r.Post(BasePath+"/"+sess.r.path+"/{id}/"+t.verb, func(w http.ResponseWriter, req *http.Request) {
			if !mayChange(s, req, sess.r, (*ambientv1.Session).GetProjectId) {
				writeDenied(w, http.StatusForbidden)
				return
			}
			obj, err := sess.transition(chi.URLParam(req, "id"), t)
			writeResult(w, http.StatusOK, obj, err)
		})
	}
	// The control plane's status write-back, the REST twin of
	// UpdateSessionStatus (the real handler's PatchStatus, read from its
	// code): the body decodes like a PATCH into SessionStatusPatchRequest,
	// a plain struct of the ten status fields (other keys are ignored), and
	// the service checks it as over gRPC.
	r.Patch(BasePath+"/"+sess.r.path+"/{id}/status", func(w http.ResponseWriter, req *http.Request) {
		if !mayChange(s, req, sess.r, (*ambientv1.Session).GetProjectId) {
			writeDenied(w, http.StatusForbidden)
			return
		}
		in := &ambientv1.UpdateSessionStatusRequest{Id: chi.URLParam(req, "id")}
		if err := readPatch[*ambientv1.Session](req.Body, "SessionStatusPatchRequest", in, nil); err != nil {
			writeError(w, err)
			return
		}
		obj, err := sess.updateStatus(in)
		writeResult(w, http.StatusOK, obj, err)
	})

	proj := &projectService{r: s.projectResource()}
	mount(r, collection[*ambientv1.Project, *ambientv1.UpdateProjectRequest]{
		s: s, r: proj.r, required: []string{"name"},
		project:   func(p *ambientv1.Project) string { return p.GetMetadata().GetId() },
		projectOf: (*ambientv1.Project).GetName, // a project's id is its name
		convert: func(body *ambientv1.Project) (*ambientv1.Project, error) {
			// ConvertProject copies status too, which CreateProjectRequest
			// (the gRPC create) lacks.
			return convertBody(body, &ambientv1.CreateProjectRequest{}, proj.r.setMeta, []string{"status"}, true)
		},
		create: anyCaller(proj.create),
		update: proj.update,
		newU:   func(id string) *ambientv1.UpdateProjectRequest { return &ambientv1.UpdateProjectRequest{Id: id} },
	})

	set := &projectSettingsService{r: s.settingsResource()}
	mount(r, collection[*ambientv1.ProjectSettings, *ambientv1.UpdateProjectSettingsRequest]{
		s: s, r: set.r, required: []string{"project_id"},
		project:   (*ambientv1.ProjectSettings).GetProjectId,
		projectOf: (*ambientv1.ProjectSettings).GetProjectId,
		convert: func(body *ambientv1.ProjectSettings) (*ambientv1.ProjectSettings, error) {
			return convertBody(body, &ambientv1.CreateProjectSettingsRequest{}, set.r.setMeta, nil, true)
		},
		create: anyCaller(set.create),
		update: set.update,
		newU: func(id string) *ambientv1.UpdateProjectSettingsRequest {
			return &ambientv1.UpdateProjectSettingsRequest{Id: id}
		},
		nullColumns: []string{"runner_secrets"}, // plugins/projectSettings/migration.go; field 4 reserved
	})

	// The API's User objects (plugins/users of the real server, read from
	// its code): the generated model wants "username" and then "name";
	// ConvertUser keeps the create request's fields and, like
	// ConvertProject, reads updated_at only beside created_at;
	// UserPatchRequest is a plain struct of username, name and email. The
	// real users routes keep rh-trex's default authorization middleware,
	// which wants an identity and nothing more (projects swap in the
	// role-binding one), so multi-user mode narrows nothing here.
	usr := &userService{r: s.userResource()}
	mount(r, collection[*ambientv1.User, *ambientv1.UpdateUserRequest]{
		s: s, r: usr.r, required: []string{"username", "name"},
		convert: func(body *ambientv1.User) (*ambientv1.User, error) {
			return convertBody(body, &ambientv1.CreateUserRequest{}, usr.r.setMeta, nil, true)
		},
		create: anyCaller(usr.create),
		update: usr.update,
		newU:   func(id string) *ambientv1.UpdateUserRequest { return &ambientv1.UpdateUserRequest{Id: id} },
	})
	return r
}

// tagSpan names each request's server span after its route once chi has
// routed it (one name per route, "GET /api/ambient/v1/sessions/{id}",
// instead of otelhttp's bare method) and tags it with the object the path
// names, so a search for the object (ambient.object_id) finds every read
// and write of it.
func tagSpan(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		next.ServeHTTP(w, req)
		rc := chi.RouteContext(req.Context())
		pattern := rc.RoutePattern()
		if pattern == "" {
			return // not found: no route to name
		}
		span := trace.SpanFromContext(req.Context())
		span.SetName(req.Method + " " + pattern)
		id := rc.URLParam("id")
		resource, _, _ := strings.Cut(strings.TrimPrefix(pattern, BasePath+"/"), "/")
		if id == "" || resource == "" {
			return
		}
		span.SetAttributes(telemetry.AttrResource.String(resource), telemetry.AttrObjectID.String(id))
		if resource == "projects" {
			span.SetAttributes(telemetry.AttrProjectID.String(id))
		}
	})
}

// mount adds the five CRUD routes of one collection.
func mount[T object, U proto.Message](r chi.Router, c collection[T, U]) {
	base := BasePath + "/" + c.r.path
	md := newOf[T]().ProtoReflect().Descriptor()
	// The REST collections are named after the real server's tables.
	tbl := newTable(c.r.path, md, c.nullColumns...)
	r.Get(base, func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		// rh-trex's NewListArguments trims spaces only (not tabs or
		// newlines) before it looks at the search.
		search := strings.Trim(q.Get("search"), " ")
		if c.listScope != nil {
			var err error
			if search, err = c.listScope(q, search); err != nil {
				writeError(w, err)
				return
			}
		}
		// The generic list checks orderBy before it parses the search,
		// and PostgreSQL judges its columns after (orderby.go).
		orderItems, err := parseOrderBy(q.Get("orderBy"))
		if err != nil {
			writeError(w, err)
			return
		}
		match, err := listSearch(search, md)
		if err != nil {
			writeError(w, err)
			return
		}
		compare, err := tbl.order(orderItems)
		if err != nil {
			writeError(w, err)
			return
		}
		var order func(a, b T) int
		if compare != nil {
			order = func(a, b T) int { return compare(a.ProtoReflect(), b.ProtoReflect()) }
		}
		var filter func(T) bool
		if match != nil {
			filter = func(o T) bool { return match(o.ProtoReflect()) }
		}
		if u := callerOf(req.Context()); u != nil && c.project != nil {
			// Computed before listing: the filter runs under the store's
			// lock, and the settings store is read to find group grants.
			visible := c.s.visibleProjects(u)
			search := filter
			filter = func(o T) bool { return visible(c.project(o)) && (search == nil || search(o)) }
		}
		items, meta := c.r.list(queryInt32(q.Get("page")), queryInt32(q.Get("size")), filter, order)
		if strings.Trim(q.Get("fields"), " ") != "" {
			// The real list handlers hand their items, a slice, to
			// rh-trex-ai's presenters.SliceFilter whenever the fields
			// parameter (trimmed of spaces) is not empty (NewListArguments
			// then always adds "id"), and SliceFilter reads the list's
			// Kind with reflect's FieldByName, which panics on a slice:
			// with no recovery middleware, net/http ends the connection
			// without an answer. Only a list that succeeded gets there.
			dropConnection(w)
			return
		}
		b, err := restapi.MarshalList(c.r.kind, meta.GetPage(), meta.GetTotal(), items)
		if err != nil {
			writeError(w, errInternal(err))
			return
		}
		writeBody(w, http.StatusOK, b)
	})
	r.Get(base+"/{id}", func(w http.ResponseWriter, req *http.Request) {
		obj, err := c.r.get(chi.URLParam(req, "id"))
		if u := callerOf(req.Context()); u != nil && c.project != nil && (err != nil || !c.s.sees(u, c.project(obj))) {
			// The real server's authorization middleware answers a denied
			// GET of one object as if it were absent.
			writeDenied(w, http.StatusNotFound)
			return
		}
		writeResult(w, http.StatusOK, obj, err)
	})
	r.Post(base, func(w http.ResponseWriter, req *http.Request) {
		body, err := readObject[T](req.Body, c.required...)
		if err != nil {
			writeError(w, err)
			return
		}
		in, err := c.convert(body)
		if errors.Is(err, errNilDereference) {
			// The real handler panics; with no recovery middleware in
			// its chain, net/http ends the connection without an
			// answer (and logs the panic). Ending it here does the same
			// without a panic.
			dropConnection(w)
			return
		}
		if err != nil {
			writeError(w, err)
			return
		}
		if u := callerOf(req.Context()); u != nil && c.projectOf != nil && !c.s.sees(u, c.projectOf(in)) {
			writeDenied(w, http.StatusForbidden)
			return
		}
		obj, err := c.create(in, callerOf(req.Context()))
		writeResult(w, http.StatusCreated, obj, err)
	})
	r.Patch(base+"/{id}", func(w http.ResponseWriter, req *http.Request) {
		if !mayChange(c.s, req, c.r, c.project) {
			writeDenied(w, http.StatusForbidden)
			return
		}
		in := c.newU(chi.URLParam(req, "id"))
		// The path's id wins: "id" in a body is ignored like any key the
		// PatchRequest lacks.
		if err := readPatch[T](req.Body, c.r.kind+"PatchRequest", in, c.fixedOnPatch); err != nil {
			writeError(w, err)
			return
		}
		obj, err := c.update(in)
		writeResult(w, http.StatusOK, obj, err)
	})
	r.Delete(base+"/{id}", func(w http.ResponseWriter, req *http.Request) {
		if !mayChange(c.s, req, c.r, c.project) {
			writeDenied(w, http.StatusForbidden)
			return
		}
		// 204 also for an id already gone, like the real server.
		c.r.remove(chi.URLParam(req, "id"))
		w.WriteHeader(http.StatusNoContent)
	})
}

func (s *Server) restAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == HealthPath || !s.checksTokens() {
			next.ServeHTTP(w, r) // probes carry no token
			return
		}
		// The real bearer middleware's answers: http.Error's plain text.
		h := r.Header.Get("Authorization")
		if h == "" {
			http.Error(w, reasonNoAuth, http.StatusUnauthorized)
			return
		}
		u, err := s.checkCaller(h)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(withCaller(r.Context(), u)))
	})
}

// anyCaller adapts a create that does not depend on who calls.
func anyCaller[C, T any](create func(C) (T, error)) func(C, *User) (T, error) {
	return func(in C, _ *User) (T, error) { return create(in) }
}

// mayChange reports whether the caller may change the object named by the
// path's id: the service caller always, a user only an existing object of
// its projects (an unknown id is denied like a foreign one, as the real
// server's middleware cannot resolve its project either). A kind of no
// project (project nil) anyone may change.
func mayChange[T object](s *Server, req *http.Request, r *resource[T], project func(T) string) bool {
	u := callerOf(req.Context())
	if u == nil || project == nil {
		return true
	}
	obj, err := r.get(chi.URLParam(req, "id"))
	return err == nil && s.sees(u, project(obj))
}

// writeDenied writes the bodies of the real server's authorization
// middleware (no id or code, unlike the handlers' error objects).
func writeDenied(w http.ResponseWriter, code int) {
	reason := "Forbidden"
	if code == http.StatusNotFound {
		reason = "Not Found"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// The client may be gone; there is nobody left to tell.
	_, _ = w.Write([]byte(`{"kind":"Error","reason":"` + reason + `"}`))
}

// queryInt32 reads a page or size parameter. What is no number reads as 0,
// which the clamps turn into the default: the real server's page < 1
// becoming 1 points at that, but its answer to "page=abc" was not measured.
func queryInt32(v string) int32 {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
	if err != nil {
		return 0
	}
	return int32(n)
}

func writeResult[T object](w http.ResponseWriter, code int, obj T, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	b, err := restapi.MarshalObject(obj)
	if err != nil {
		writeError(w, errInternal(err))
		return
	}
	writeBody(w, code, b)
}

func writeBody(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// The client may be gone; there is nobody left to tell.
	_, _ = w.Write(b)
}

// writeError writes err as the real server's error object with a fresh
// operation id. An error that is no APIError is a 500.
func writeError(w http.ResponseWriter, err error) {
	var ae *APIError
	if !errors.As(err, &ae) {
		ae = &APIError{Status: http.StatusInternalServerError, ID: restapi.ErrorIDGeneral, Reason: err.Error()}
	}
	b, merr := json.Marshal(restapi.NewError(ae.Status, ae.ID, ae.Reason, newID()))
	if merr != nil {
		b = []byte(`{"kind":"Error","reason":"encode error"}`)
	}
	writeBody(w, ae.Status, b)
}

// dropConnection ends the request's connection without an answer, as
// net/http does when a handler panics. Where the connection cannot be taken
// over (HTTP/2) the answer is a 500, which is what a recovery middleware
// would send.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	}
	// Nothing was written; closing is the point, its error adds nothing.
	_ = conn.Close()
}

// safeProjectID is what the real sessions list takes in its project_id
// parameter (the handler's safeProjectIDPattern, read from its code):
// the value goes into a search it builds by hand, so anything that could
// break out of the quotes is refused.
var safeProjectID = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// sessionProjectScope is the real sessions list's project_id parameter
// (plugins/sessions/handler.go, read from its code; its integration test
// TestSessionListRejectsProjectIdInjection): a non-empty value becomes
// part of the search, "project_id = '<value>'" alone or "project_id =
// '<value>' and (<search>)", which then narrows items and total (a session
// without a project, NULL, matches no value) and is the text a search
// error quotes; a value outside safeProjectID is 400 id 8 "invalid
// project_id format". Absent or empty, it changes nothing. Only the REST
// list reads it: gRPC lists take page and size only.
func sessionProjectScope(q url.Values, search string) (string, error) {
	project := q.Get("project_id")
	if project == "" {
		return search, nil
	}
	if !safeProjectID.MatchString(project) {
		return "", errValidation("invalid project_id format")
	}
	filter := fmt.Sprintf("project_id = '%s'", project)
	if search == "" {
		return filter, nil
	}
	return fmt.Sprintf("%s and (%s)", filter, search), nil
}
