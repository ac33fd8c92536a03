package memapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestFaultsAddrEndsWatches: the memapi binary's -faults-addr (Config.
// FaultsAddr) lets a harness that runs memapi as a process cut every watch
// stream, as memapi.Server.EndWatches does in-process: the stream ends with
// EOF and the answer counts it.
func TestFaultsAddrEndsWatches(t *testing.T) {
	t.Parallel()
	cfg := memapi.Config{GRPCAddr: testenv.FreeAddr(t), RESTAddr: testenv.FreeAddr(t), Token: testToken, FaultsAddr: testenv.FreeAddr(t)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1) // one result from Run
	go func() { done <- memapi.Run(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	c, err := apiclient.New(apiclient.Config{Addr: cfg.GRPCAddr, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// Run listens asynchronously: wait until the API answers.
	eventually(t, 10*time.Second, func() error { return c.Check(ctx) })
	watch, err := c.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + cfg.FaultsAddr + memapi.FaultsPath + "/end-watches"
	// The watch registers asynchronously: cut until one stream was ended.
	eventually(t, 10*time.Second, func() error {
		n, err := endWatches(t, url)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("ended %d streams, want 1", n)
		}
		return nil
	})
	if _, err := recv(t, watch, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after the cut: %v, want io.EOF", err)
	}
}

func endWatches(t *testing.T, url string) (int, error) {
	t.Helper()
	resp, err := http.Post(url, "", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("POST %s: %s", url, resp.Status)
	}
	var body struct {
		Ended int `json:"ended"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, err
	}
	return body.Ended, nil
}

// TestFaultsHandlerRoutes: only POST /faults/end-watches injects a fault.
func TestFaultsHandlerRoutes(t *testing.T) {
	t.Parallel()
	srv, err := memapi.New()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodPost, "/faults/end-watches", http.StatusOK},
		{http.MethodGet, "/faults/end-watches", http.StatusMethodNotAllowed},
		{http.MethodPost, "/faults/other", http.StatusNotFound},
	}
	for _, tc := range tests {
		rec := httptest.NewRecorder()
		srv.FaultsHandler().ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, rec.Code, tc.want)
		}
	}
}
