package app_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRunnersToldWhereToListen: the service tells each runner where to
// listen in AGUI_HOST, the platform runner's variable (it listens on
// 0.0.0.0 without it): 127.0.0.1 with the default, loopback, advertised
// host; every interface when agui-proxy dials the runner at another
// address (a pod IP), since runner-manager still probes 127.0.0.1. The
// runner is the demo runner behind a shell that writes down what it got.
// Before, AGUI_HOST was not passed at all.
func TestRunnersToldWhereToListen(t *testing.T) {
	for _, tc := range []struct {
		name, advertise, want string
	}{
		{"loopback advertised", "127.0.0.1", "127.0.0.1"},
		{"pod IP advertised", "10.255.255.1", "0.0.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			svc := w.start("rm-listen", 1, "RUNNER_ADVERTISE_HOST="+tc.advertise,
				"LOCAL_RUNNER_COMMAND=/bin/sh -c 'printf %s \"${AGUI_HOST-unset}\" > agui-host; exec "+demoRunner+"'")
			id := w.create("listen")
			w.waitAll([]string{id}, "Running", 20*time.Second)
			got, err := os.ReadFile(filepath.Join(svc.root, id, "agui-host"))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("runner got AGUI_HOST %q, want %q", got, tc.want)
			}
			if rec, err := w.record(id); err != nil || rec.Host != tc.advertise {
				t.Fatalf("record %+v (%v): want host %q", rec, err, tc.advertise)
			}
		})
	}
}
