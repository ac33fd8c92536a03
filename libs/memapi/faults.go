package memapi

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// FaultsPath is where FaultsHandler serves; POST FaultsPath + "/end-watches"
// calls EndWatches, POST FaultsPath + "/outage?for=<duration>" StartOutage
// and POST FaultsPath + "/outage/end" EndOutage.
const FaultsPath = "/faults"

// MaxOutage bounds an outage asked over HTTP: a harness that dies during
// one must not leave the API down for good.
const MaxOutage = time.Hour

// FaultsHandler exposes fault injection over HTTP, for harnesses that run
// the memapi binary as a process and cannot call the Server's methods (the
// chaos suite, `make chaos`):
//
//   - POST /faults/end-watches ends every open watch stream (EndWatches) and
//     answers 200 {"ended": N}.
//   - POST /faults/outage?for=60s makes the whole API look down for that
//     long, as the real server restarting (StartOutage: watches ended,
//     every gRPC and REST connection closed, new ones refused, state
//     kept) and answers 200 {"ended": N, "until": RFC 3339} once the
//     connections are closed; a missing, unparsable, non-positive or
//     over-MaxOutage duration is 400.
//   - POST /faults/outage/end ends the outage now (EndOutage): 200 {}.
//
// Other paths are 404, other methods 405. It checks no token (and is not
// subject to the outage): serve it on a loopback address of a test system
// only, never beside an API that matters.
func (s *Server) FaultsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+FaultsPath+"/end-watches", func(w http.ResponseWriter, _ *http.Request) {
		n := s.EndWatches()
		s.opts.log.Info("watch streams ended by fault injection", slog.Int(logkey.Count, n))
		writeFaultAnswer(w, struct {
			Ended int `json:"ended"`
		}{n})
	})
	mux.HandleFunc("POST "+FaultsPath+"/outage", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("for"))
		if err == nil && (d <= 0 || d > MaxOutage) {
			err = fmt.Errorf("want more than 0 and at most %s", MaxOutage)
		}
		if err != nil {
			http.Error(w, fmt.Sprintf("for=%q: %v", r.URL.Query().Get("for"), err), http.StatusBadRequest)
			return
		}
		n := s.StartOutage(d)
		_, until := s.InOutage()
		s.opts.log.Warn("API outage started by fault injection", slog.Duration("for", d), slog.Int(logkey.Count, n))
		writeFaultAnswer(w, struct {
			Ended int       `json:"ended"`
			Until time.Time `json:"until"`
		}{n, until})
	})
	mux.HandleFunc("POST "+FaultsPath+"/outage/end", func(w http.ResponseWriter, _ *http.Request) {
		s.EndOutage()
		writeFaultAnswer(w, struct{}{})
	})
	return mux
}

// writeFaultAnswer writes v as the JSON answer of a fault request.
func writeFaultAnswer(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	// The client may be gone; the fault is injected either way.
	_ = json.NewEncoder(w).Encode(v) //nolint:errcheck // see above
}
