package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRun(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.WriteHeader(http.StatusOK)
		case "/auth":
			if r.Header.Get("Authorization") != "Bearer s3cret" {
				w.WriteHeader(http.StatusUnauthorized)
			}
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	env := map[string]string{"TOKEN": "s3cret"}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{"ready", []string{srv.URL + "/readyz"}, false},
		{"not ready", []string{srv.URL + "/other"}, true},
		{"bearer", []string{"-bearer-env", "TOKEN", srv.URL + "/auth"}, false},
		{"missing bearer", []string{srv.URL + "/auth"}, true},
		{"unreachable", []string{"-timeout", "1s", "http://127.0.0.1:1/readyz"}, true},
		{"no url", nil, true},
		{"bad flag", []string{"-nope", srv.URL}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := run(tc.args, getenv)
			if (err != nil) != tc.wantErr {
				t.Fatalf("run(%v) = %v, want error %v", tc.args, err, tc.wantErr)
			}
			if tc.name == "no url" && !errors.Is(err, errUsage) {
				t.Errorf("want errUsage, got %v", err)
			}
		})
	}
}
