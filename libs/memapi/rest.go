package memapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ambient-code/control-plane/libs/restapi"
	"github.com/ambient-code/control-plane/libs/telemetry"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// HealthPath answers 200 without a token (the real server serves it on a
// separate port, 4434). Its bearer middleware also lets /health and
// /metrics through without a token; memapi serves neither.
const HealthPath = "/healthcheck"

// maxBodyBytes bounds a REST request body.
const maxBodyBytes = 1 << 20

// reasonNoAuth is the plain-text 401 body without an Authorization header
// (measured). The other 401 bodies are checkCaller's errors, the real
// bearer middleware's texts (read from its code, not measured).
const reasonNoAuth = "missing authorization header"

// collection is one REST collection, generic over the object (T), its
// create request (C) and update request (U). The handlers read the body as
// a flat object T (every field of the object is a known key, as in the
// real server's OpenAPI schema) and copy the fields the request has; the
// others (phase, kube_cr_name, ...) are read-only and ignored.
type collection[T object, C, U proto.Message] struct {
	s        *Server
	r        *resource[T]
	required string // property a create body must have
	// project returns the project of a stored object, projectOf the
	// project a create request names (multi-user mode narrows by them).
	project   func(T) string
	projectOf func(C) string
	create    func(C, *User) (T, error) // the user is the caller (nil: the service token)
	update    func(U) (T, error)
	newC      func() C
	newU      func(id string) U
	// fixedOnPatch are fields of U that a REST PATCH ignores: the real
	// server's PatchRequest model lacks them (a session's project_id is
	// set at create only; over gRPC UpdateSession changes it).
	fixedOnPatch []string
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
	mount(r, collection[*ambientv1.Session, *ambientv1.CreateSessionRequest, *ambientv1.UpdateSessionRequest]{
		s: s, r: sess.r, required: "name", create: sess.create,
		update:       sess.update,
		project:      (*ambientv1.Session).GetProjectId,
		projectOf:    (*ambientv1.CreateSessionRequest).GetProjectId,
		newC:         func() *ambientv1.CreateSessionRequest { return &ambientv1.CreateSessionRequest{} },
		newU:         func(id string) *ambientv1.UpdateSessionRequest { return &ambientv1.UpdateSessionRequest{Id: id} },
		fixedOnPatch: []string{"project_id"},
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
		if err := readPatch[*ambientv1.Session](req.Body, in, nil); err != nil {
			writeError(w, err)
			return
		}
		obj, err := sess.updateStatus(in)
		writeResult(w, http.StatusOK, obj, err)
	})

	proj := &projectService{r: s.projectResource()}
	mount(r, collection[*ambientv1.Project, *ambientv1.CreateProjectRequest, *ambientv1.UpdateProjectRequest]{
		s: s, r: proj.r, required: "name", create: anyCaller(proj.create),
		update:    proj.update,
		project:   func(p *ambientv1.Project) string { return p.GetMetadata().GetId() },
		projectOf: (*ambientv1.CreateProjectRequest).GetName, // a project's id is its name
		newC:      func() *ambientv1.CreateProjectRequest { return &ambientv1.CreateProjectRequest{} },
		newU:      func(id string) *ambientv1.UpdateProjectRequest { return &ambientv1.UpdateProjectRequest{Id: id} },
	})

	set := &projectSettingsService{r: s.settingsResource()}
	mount(r, collection[*ambientv1.ProjectSettings, *ambientv1.CreateProjectSettingsRequest, *ambientv1.UpdateProjectSettingsRequest]{
		s: s, r: set.r, required: "project_id", create: anyCaller(set.create),
		update:    set.update,
		project:   (*ambientv1.ProjectSettings).GetProjectId,
		projectOf: (*ambientv1.CreateProjectSettingsRequest).GetProjectId,
		newC:      func() *ambientv1.CreateProjectSettingsRequest { return &ambientv1.CreateProjectSettingsRequest{} },
		newU: func(id string) *ambientv1.UpdateProjectSettingsRequest {
			return &ambientv1.UpdateProjectSettingsRequest{Id: id}
		},
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
func mount[T object, C, U proto.Message](r chi.Router, c collection[T, C, U]) {
	base := BasePath + "/" + c.r.path
	md := newOf[T]().ProtoReflect().Descriptor()
	r.Get(base, func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		match, err := parseSearch(q.Get("search"), md)
		if err != nil {
			writeError(w, errBadSearch(err.Error()))
			return
		}
		var filter func(T) bool
		if match != nil {
			filter = func(o T) bool { return match(o.ProtoReflect()) }
		}
		if u := callerOf(req.Context()); u != nil {
			// Computed before listing: the filter runs under the store's
			// lock, and the settings store is read to find group grants.
			visible := c.s.visibleProjects(u)
			search := filter
			filter = func(o T) bool { return visible(c.project(o)) && (search == nil || search(o)) }
		}
		items, meta := c.r.list(queryInt32(q.Get("page")), queryInt32(q.Get("size")), filter)
		b, err := restapi.MarshalList(c.r.kind, meta.GetPage(), meta.GetTotal(), items)
		if err != nil {
			writeError(w, errInternal(err))
			return
		}
		writeBody(w, http.StatusOK, b)
	})
	r.Get(base+"/{id}", func(w http.ResponseWriter, req *http.Request) {
		obj, err := c.r.get(chi.URLParam(req, "id"))
		if u := callerOf(req.Context()); u != nil && (err != nil || !c.s.sees(u, c.project(obj))) {
			// The real server's authorization middleware answers a denied
			// GET of one object as if it were absent.
			writeDenied(w, http.StatusNotFound)
			return
		}
		writeResult(w, http.StatusOK, obj, err)
	})
	r.Post(base, func(w http.ResponseWriter, req *http.Request) {
		in := c.newC()
		if err := readObject[T](req.Body, c.required, in); err != nil {
			writeError(w, err)
			return
		}
		if u := callerOf(req.Context()); u != nil && !c.s.sees(u, c.projectOf(in)) {
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
		if err := readPatch[T](req.Body, in, c.fixedOnPatch); err != nil {
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

// readObject reads a create body as a flat object T, like the real server
// (its generated OpenAPI model decodes with DisallowUnknownFields): a body
// that is no JSON object, lacks the required property or has a key that is
// no field of T answers 400 id 17 ("Invalid request format: ..."); then,
// as its handlers' ValidateEmpty(id), a non-empty "id" answers 400 id 8
// "id must be empty". The fields that dst (a Create request) has are
// copied into it.
func readObject[T object](body io.Reader, required string, dst proto.Message) error {
	b, err := readBody(body)
	if err != nil {
		return err
	}
	// The required property is checked before the fields' types, in the
	// order of the real server's generated OpenAPI decoder.
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return errMalformed(err.Error())
	}
	if _, ok := keys[required]; required != "" && !ok {
		return errMalformed("no value given for required property " + required)
	}
	if err := checkGoTypes(keys, newOf[T]().ProtoReflect().Descriptor()); err != nil {
		return err
	}
	obj, err := decodeObject[T](b)
	if err != nil {
		return err
	}
	if obj.GetMetadata().GetId() != "" {
		return errValidation("id must be empty")
	}
	if err := copyFields(dst, obj, true, "metadata", "id"); err != nil {
		return errInternal(err)
	}
	return nil
}

// readPatch reads a PATCH body like the real server, which decodes it into
// its PatchRequest model with plain encoding/json: keys that are no field
// of dst (an Update request), "id", read-only fields of the object (phase,
// kube_cr_name, ...), fixed (fields the PatchRequest lacks) and unknown
// keys are ignored; a body that is no JSON object, or a known key of the
// wrong type, answers 400 id 17, except "null", which sets nothing (rh-trex's
// handlers.Handle unmarshals into an interface holding the model, and null
// clears the interface instead). The rest is copied into dst.
func readPatch[T object](body io.Reader, dst proto.Message, fixed []string) error {
	b, err := readBody(body)
	if err != nil {
		return err
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return errMalformed(err.Error())
	}
	if keys == nil { // null
		keys = map[string]json.RawMessage{}
	}
	fields := dst.ProtoReflect().Descriptor().Fields()
	for k := range keys {
		if k == "id" || slices.Contains(fixed, k) || fields.ByName(protoreflect.Name(k)) == nil {
			delete(keys, k)
		}
	}
	if err := checkGoTypes(keys, dst.ProtoReflect().Descriptor()); err != nil {
		return err
	}
	if b, err = json.Marshal(keys); err != nil {
		return errInternal(err)
	}
	obj, err := decodeObject[T](b)
	if err != nil {
		return err
	}
	if err := copyFields(dst, obj, true, "metadata", "id"); err != nil {
		return errInternal(err)
	}
	return nil
}

// checkGoTypes refuses, as 400 id 17, the values of keys (a body's keys)
// that the real server's encoding/json would not decode into the Go type of
// the field of md (or of the metadata) they name: its models are Go structs
// (*int32, *float64, *string, *time.Time), so a number field takes only a
// JSON number that fits, no quoted number, no "NaN" or "Infinity", no
// exponent or fraction for an integer. protojson, which decodeObject uses,
// takes all of those: without this check memapi would store what the real
// server refuses. null passes (it sets nothing); keys that name no field
// are left to the callers.
func checkGoTypes(keys map[string]json.RawMessage, md protoreflect.MessageDescriptor) error {
	ref := (&ambientv1.ObjectReference{}).ProtoReflect().Descriptor().Fields()
	for k, raw := range keys {
		fd := md.Fields().ByName(protoreflect.Name(k))
		if fd == nil || fd.Name() == metadataName {
			if fd = ref.ByName(protoreflect.Name(k)); fd == nil {
				continue
			}
		}
		var dst any
		switch fd.Kind() {
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
			dst = new(*int32)
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
			dst = new(*int64)
		case protoreflect.DoubleKind:
			dst = new(*float64)
		case protoreflect.FloatKind:
			dst = new(*float32)
		case protoreflect.StringKind:
			dst = new(*string)
		case protoreflect.BoolKind:
			dst = new(*bool)
		case protoreflect.MessageKind:
			if fd.Message().FullName() != "google.protobuf.Timestamp" {
				continue
			}
			dst = new(*time.Time)
		default:
			continue
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				// encoding/json's wording for a struct field.
				te.Struct, te.Field = string(md.Name()), k
			}
			return errMalformed(err.Error())
		}
	}
	return nil
}

// readBody reads a request body of at most maxBodyBytes.
func readBody(body io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(body, maxBodyBytes+1))
	if err != nil {
		return nil, errMalformed("read body: " + err.Error())
	}
	if len(b) > maxBodyBytes {
		return nil, errMalformed(fmt.Sprintf("body larger than %d bytes", maxBodyBytes))
	}
	return b, nil
}

// decodeObject decodes a flat REST object T; a bad one answers 400 id 17.
func decodeObject[T object](b []byte) (T, error) {
	obj := newOf[T]()
	if err := restapi.UnmarshalObject(b, obj); err != nil {
		var de *restapi.DecodeError
		if errors.As(err, &de) {
			return obj, errMalformed(de.Detail)
		}
		return obj, errMalformed(err.Error())
	}
	return obj, nil
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
// server's middleware cannot resolve its project either).
func mayChange[T object](s *Server, req *http.Request, r *resource[T], project func(T) string) bool {
	u := callerOf(req.Context())
	if u == nil {
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
