package app

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/cors"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/proxy"
)

// corsMaxAge is how long browsers may cache a preflight answer (seconds).
const corsMaxAge = 600

// newRouter builds the proxy's HTTP surface: CORS on everything, browsers'
// cross-site writes refused, /healthz (and /health, the original's), and
// /sessions/... and /projects/... (the platform backend's paths) behind
// authentication (nil verifier: none). There is no
// Timeout or compression middleware: streaming routes must not have them.
func newRouter(p *proxy.Proxy, v auth.Verifier, origins []string, log *slog.Logger) (http.Handler, error) {
	crossSite, err := crossSiteGuard(origins)
	if err != nil {
		return nil, err
	}
	r := chi.NewRouter()
	r.Use(cors.Handler(cors.Options{
		// Only listed origins are echoed; "*" is sent as "*" and never with
		// credentials (AllowCredentials stays false: bearer tokens travel in
		// the Authorization header, which needs no credentials mode).
		AllowedOrigins:     origins,
		AllowedMethods:     []string{http.MethodGet, http.MethodPost, http.MethodOptions},
		AllowedHeaders:     []string{"Content-Type", "Authorization"},
		AllowCredentials:   false,
		MaxAge:             corsMaxAge,
		OptionsPassthrough: true, // answered below with 204 instead of the library's 200
	}))
	r.Use(optionsNoContent)
	r.Use(crossSite)
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		proxy.WriteError(w, http.StatusNotFound, "not found")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		proxy.WriteError(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	alive := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n")) // client gone: nothing to do
	}
	r.Get("/healthz", alive)
	r.Get("/health", alive) // the original proxy's path, which its users probe
	r.Group(func(r chi.Router) {
		if v != nil {
			r.Use(auth.Middleware(v, log))
		}
		r.Handle("/sessions/*", p)
		// The platform backend's run path, for the platform's runner
		// (route.BackendPrefix); the proxy answers every other path
		// under it with 404.
		r.Handle("/projects/*", p)
	})
	return r, nil
}

// crossSiteGuard refuses a browser's POST from a site CORS does not allow
// (net/http's CrossOriginProtection, told by Sec-Fetch-Site or Origin), with
// 403 before it reaches a runner. CORS alone only hides the answer from such
// a site: a page can still send a form or a text/plain POST without a
// preflight, and with AGUI_AUTH=none (the loopback default) that would start
// or interrupt a run of any session whose id the page knows. Requests
// without those headers (ambientctl, curl) and the allowed origins pass;
// with "*" every origin is allowed, so nothing is refused.
func crossSiteGuard(origins []string) (func(http.Handler) http.Handler, error) {
	if slices.Contains(origins, "*") {
		return func(next http.Handler) http.Handler { return next }, nil
	}
	guard := http.NewCrossOriginProtection()
	for _, o := range origins {
		if err := guard.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("cors origin %q: %w", o, err)
		}
	}
	guard.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		proxy.WriteError(w, http.StatusForbidden, "cross-origin request refused: origin not in CORS_ALLOWED_ORIGIN")
	}))
	return guard.Handler, nil
}

// optionsNoContent answers every OPTIONS request with 204: CORS preflights
// (headers already set by the CORS handler) and plain OPTIONS alike.
func optionsNoContent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
