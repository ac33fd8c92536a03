package health

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Route paths.
const (
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathMetrics = "/metrics"
)

func (s *Server) routes(reg *prometheus.Registry) chi.Router {
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{Error: "not found"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "method not allowed"})
	})
	r.Get(PathHealthz, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, Report{Status: StatusOK})
	})
	r.Get(PathReadyz, func(w http.ResponseWriter, req *http.Request) {
		rep := s.Readiness(req.Context())
		code := http.StatusOK
		if rep.Status != StatusOK {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, rep)
	})
	if reg != nil {
		r.Method(http.MethodGet, PathMetrics, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			// Serve what can be gathered rather than nothing when one
			// collector fails; the failure is in promhttp's own metric.
			ErrorHandling: promhttp.ContinueOnError,
			Registry:      reg,
		}))
	}
	return r
}

// errorBody is the JSON body of our own HTTP errors.
type errorBody struct {
	Error string `json:"error"`
}

// writeJSON writes v as the JSON response body with status code.
func writeJSON[T any](w http.ResponseWriter, code int, v T) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	// The status line is already sent, so an encode or write error (a client
	// that went away) cannot be reported to anyone.
	_ = json.NewEncoder(w).Encode(v)
}
