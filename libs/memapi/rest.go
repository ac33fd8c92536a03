package memapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// HealthPath answers 200 without a token (the real server serves it on a
// separate port, 4434).
const HealthPath = "/healthcheck"

// maxBodyBytes bounds a REST request body.
const maxBodyBytes = 1 << 20

var (
	jsonOut = protojson.MarshalOptions{UseProtoNames: true}
	jsonIn  = protojson.UnmarshalOptions{} // strict: unknown fields are an error
)

// restOps is one REST collection, generic over the object (T), its create
// request (C) and update request (U).
type restOps[T object, C, U proto.Message] struct {
	r      *resource[T]
	newC   func() C
	newU   func() U
	setID  func(U, string)
	create func(context.Context, C) (T, error)
	update func(context.Context, U) (T, error)
	list   func(page, size int32) proto.Message
}

// Handler returns the REST subset (chi) under BasePath; see the package doc
// for routes and JSON shapes. It checks the token like the gRPC services.
// Changes made through it produce watch events.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.restAuth)
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	})

	r.Get(HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		// The client may be gone; there is nobody left to tell.
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})

	sess := s.Sessions()
	sr := s.sessionResource()
	mount(r, "sessions", restOps[*ambientv1.Session, *ambientv1.CreateSessionRequest, *ambientv1.UpdateSessionRequest]{
		r:      sr,
		newC:   func() *ambientv1.CreateSessionRequest { return &ambientv1.CreateSessionRequest{} },
		newU:   func() *ambientv1.UpdateSessionRequest { return &ambientv1.UpdateSessionRequest{} },
		setID:  func(u *ambientv1.UpdateSessionRequest, id string) { u.Id = id },
		create: sess.CreateSession,
		update: sess.UpdateSession,
		list: func(page, size int32) proto.Message {
			items, meta := sr.list(page, size)
			return &ambientv1.ListSessionsResponse{Items: items, Metadata: meta}
		},
	})
	for action, phase := range map[string]string{"start": "Pending", "stop": "Stopping"} {
		r.Post(BasePath+"/sessions/{id}/"+action, func(w http.ResponseWriter, req *http.Request) {
			obj, err := sess.UpdateSessionStatus(req.Context(), &ambientv1.UpdateSessionStatusRequest{
				Id: chi.URLParam(req, "id"), Phase: proto.String(phase),
			})
			writeResult(w, http.StatusOK, obj, err)
		})
	}
	r.Patch(BasePath+"/sessions/{id}/status", func(w http.ResponseWriter, req *http.Request) {
		in := &ambientv1.UpdateSessionStatusRequest{}
		if err := decodeJSON(req.Body, in); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		in.Id = chi.URLParam(req, "id")
		obj, err := sess.UpdateSessionStatus(req.Context(), in)
		writeResult(w, http.StatusOK, obj, err)
	})

	proj := s.Projects()
	pr := s.projectResource()
	mount(r, "projects", restOps[*ambientv1.Project, *ambientv1.CreateProjectRequest, *ambientv1.UpdateProjectRequest]{
		r:      pr,
		newC:   func() *ambientv1.CreateProjectRequest { return &ambientv1.CreateProjectRequest{} },
		newU:   func() *ambientv1.UpdateProjectRequest { return &ambientv1.UpdateProjectRequest{} },
		setID:  func(u *ambientv1.UpdateProjectRequest, id string) { u.Id = id },
		create: proj.CreateProject,
		update: proj.UpdateProject,
		list: func(page, size int32) proto.Message {
			items, meta := pr.list(page, size)
			return &ambientv1.ListProjectsResponse{Items: items, Metadata: meta}
		},
	})

	set := s.ProjectSettings()
	psr := s.settingsResource()
	mount(r, "project_settings", restOps[*ambientv1.ProjectSettings, *ambientv1.CreateProjectSettingsRequest, *ambientv1.UpdateProjectSettingsRequest]{
		r:      psr,
		newC:   func() *ambientv1.CreateProjectSettingsRequest { return &ambientv1.CreateProjectSettingsRequest{} },
		newU:   func() *ambientv1.UpdateProjectSettingsRequest { return &ambientv1.UpdateProjectSettingsRequest{} },
		setID:  func(u *ambientv1.UpdateProjectSettingsRequest, id string) { u.Id = id },
		create: set.CreateProjectSettings,
		update: set.UpdateProjectSettings,
		list: func(page, size int32) proto.Message {
			items, meta := psr.list(page, size)
			return &ambientv1.ListProjectSettingsResponse{Items: items, Metadata: meta}
		},
	})
	return r
}

// mount adds the five CRUD routes of one collection.
func mount[T object, C, U proto.Message](r chi.Router, path string, ops restOps[T, C, U]) {
	base := BasePath + "/" + path
	r.Get(base, func(w http.ResponseWriter, req *http.Request) {
		page, size, err := parsePageQuery(req.URL.Query().Get("page"), req.URL.Query().Get("size"))
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, ops.list(page, size))
	})
	r.Get(base+"/{id}", func(w http.ResponseWriter, req *http.Request) {
		obj, err := ops.r.get(chi.URLParam(req, "id"))
		writeResult(w, http.StatusOK, obj, err)
	})
	r.Post(base, func(w http.ResponseWriter, req *http.Request) {
		in := ops.newC()
		if err := decodeJSON(req.Body, in); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		obj, err := ops.create(req.Context(), in)
		writeResult(w, http.StatusCreated, obj, err)
	})
	r.Patch(base+"/{id}", func(w http.ResponseWriter, req *http.Request) {
		in := ops.newU()
		if err := decodeJSON(req.Body, in); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		ops.setID(in, chi.URLParam(req, "id")) // the path wins over any id in the body
		obj, err := ops.update(req.Context(), in)
		writeResult(w, http.StatusOK, obj, err)
	})
	r.Delete(base+"/{id}", func(w http.ResponseWriter, req *http.Request) {
		ops.r.remove(chi.URLParam(req, "id"))
		w.WriteHeader(http.StatusNoContent)
	})
}

func (s *Server) restAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == HealthPath {
			next.ServeHTTP(w, r) // probes carry no token
			return
		}
		if err := s.checkAuth(r.Header.Get("Authorization")); err != nil {
			writeError(w, http.StatusUnauthorized, status.Convert(err).Message())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// parsePageQuery parses the page and size query parameters ("" is 0, which
// the clamps turn into the defaults).
func parsePageQuery(page, size string) (int32, int32, error) {
	p, err := parseInt32("page", page)
	if err != nil {
		return 0, 0, err
	}
	n, err := parseInt32("size", size)
	if err != nil {
		return 0, 0, err
	}
	return p, n, nil
}

func parseInt32(name, v string) (int32, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("query parameter %s: want an integer, got %q", name, v)
	}
	return int32(n), nil
}

// decodeJSON reads a protojson body (proto or JSON field names; unknown
// fields are rejected) of at most maxBodyBytes into m. Errors wrap
// ErrBadBody.
func decodeJSON(body io.Reader, m proto.Message) error {
	b, err := io.ReadAll(io.LimitReader(body, maxBodyBytes+1))
	if err != nil {
		return fmt.Errorf("%w: read: %w", ErrBadBody, err)
	}
	if len(b) > maxBodyBytes {
		return fmt.Errorf("%w: larger than %d bytes", ErrBadBody, maxBodyBytes)
	}
	if err := jsonIn.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %w", ErrBadBody, err)
	}
	return nil
}

func writeResult(w http.ResponseWriter, code int, m proto.Message, err error) {
	if err != nil {
		st := status.Convert(err)
		writeError(w, httpStatus(st.Code()), st.Message())
		return
	}
	writeJSON(w, code, m)
}

// httpStatus maps the gRPC codes the server returns to HTTP.
func httpStatus(c codes.Code) int {
	switch c {
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists:
		return http.StatusConflict
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

func writeJSON(w http.ResponseWriter, code int, m proto.Message) {
	b, err := jsonOut.Marshal(m)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// The client may be gone; there is nobody left to tell.
	_, _ = w.Write(b)
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	b, err := json.Marshal(errorBody{Error: msg})
	if err != nil {
		b = []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// The client may be gone; there is nobody left to tell.
	_, _ = w.Write(b)
}
