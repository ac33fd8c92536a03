package memapi

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// FaultsPath is where FaultsHandler serves; POST FaultsPath + "/end-watches"
// calls EndWatches.
const FaultsPath = "/faults"

// FaultsHandler exposes fault injection over HTTP, for harnesses that run
// the memapi binary as a process and cannot call the Server's methods (the
// chaos suite, `make chaos`): POST /faults/end-watches ends every open watch
// stream (EndWatches) and answers 200 {"ended": N}. Other paths are 404,
// other methods 405. It checks no token: serve it on a loopback address of a
// test system only, never beside an API that matters.
func (s *Server) FaultsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+FaultsPath+"/end-watches", func(w http.ResponseWriter, _ *http.Request) {
		n := s.EndWatches()
		s.opts.log.Info("watch streams ended by fault injection", slog.Int(logkey.Count, n))
		w.Header().Set("Content-Type", "application/json")
		// The client may be gone; the streams are ended either way.
		_ = json.NewEncoder(w).Encode(struct { //nolint:errcheck // see above
			Ended int `json:"ended"`
		}{n})
	})
	return mux
}
