package stack

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestKubeReconcilerLeavesSessionsToLocalRunners: with --kubeconfig alone
// the stack must not run every session twice (AgenticSession + runner).
func TestKubeReconcilerLeavesSessionsToLocalRunners(t *testing.T) {
	tests := []struct {
		args []string
		want string // KUBE_SESSION_SELECTOR; "" = no kube-reconciler
	}{
		{nil, ""},
		{[]string{"--kubeconfig", "/k"}, "none"},
		{[]string{"--kubeconfig", "/k", "--kube-sessions", "projects=team-a"}, "projects=team-a"},
	}
	for _, tc := range tests {
		c, err := ParseFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatalf("ParseFlags(%q): %v", tc.args, err)
		}
		var kube *service
		for _, s := range c.services() {
			if s.name == "kube-reconciler" {
				kube = &s
			}
			if _, ok := s.env["AMBIENT_API_SERVER_URL"]; ok {
				t.Errorf("%s gets AMBIENT_API_SERVER_URL, which no service reads", s.name)
			}
		}
		switch {
		case tc.want == "" && kube != nil:
			t.Errorf("%q: kube-reconciler runs without a kubeconfig", tc.args)
		case tc.want != "" && kube == nil:
			t.Errorf("%q: no kube-reconciler", tc.args)
		case kube != nil && kube.env["KUBE_SESSION_SELECTOR"] != tc.want:
			t.Errorf("%q: KUBE_SESSION_SELECTOR = %q, want %q", tc.args, kube.env["KUBE_SESSION_SELECTOR"], tc.want)
		}
	}
}

// TestWritePIDFileIsAtomic: a reader racing rewrites of the pid file (the
// e2e test polls it while devstack restarts a killed service) never sees
// an empty or partial file.
func TestWritePIDFileIsAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.pid")
	if err := writePIDFile(path, 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for pid := 100000; pid < 102000; pid++ {
			if err := writePIDFile(path, pid); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			t.Fatalf("read %q while it was rewritten: %v", b, err)
		}
	}
}
