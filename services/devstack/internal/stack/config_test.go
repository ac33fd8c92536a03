package stack

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInvalidFlagsAreRefused: every flag is checked when the command line
// is parsed, before anything starts, and a bad value is refused naming the
// flag. Without the checks these values reached the children, which
// crash-looped until --ready-timeout and named their own variable, or
// failed with a misleading "port is taken".
func TestInvalidFlagsAreRefused(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name string
		args []string
		want []string // each must appear in the output
	}{
		{"unknown log level", []string{"--log-level", "bogus"},
			[]string{`devstack: --log-level: want one of debug|info|warn|error, got "bogus"`}},
		{"runner ports reversed", []string{"--runner-ports", "9199-9100"},
			[]string{`devstack: --runner-ports: want "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535, got "9199-9100"`}},
		{"runner ports not a range", []string{"--runner-ports", "9100"},
			[]string{`--runner-ports: want "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535, got "9100"`}},
		{"NATS port above 65535", []string{"--nats-port", "70000"},
			[]string{`--nats-port: want an integer with 1 <= N <= 65535, got "70000"`}},
		{"API gRPC port 0", []string{"--api-grpc-port", "0"},
			[]string{`--api-grpc-port: want an integer with 1 <= N <= 65535, got "0"`}},
		{"API REST port negative", []string{"--api-rest-port", "-1"},
			[]string{`--api-rest-port: want an integer with 1 <= N <= 65535, got "-1"`}},
		{"proxy port above 65535", []string{"--proxy-port", "65536"},
			[]string{`--proxy-port: want an integer with 1 <= N <= 65535, got "65536"`}},
		{"metrics ports past 65535", []string{"--metrics-port-base", "65531"},
			[]string{`--metrics-port-base: want an integer with 0 <= N <= 65530, got "65531"`}},
		{"ready timeout zero", []string{"--ready-timeout", "0s"},
			[]string{`--ready-timeout: want a positive duration, got "0s"`}},
		{"stop grace negative", []string{"--stop-grace", "-5s"},
			[]string{`--stop-grace: want a positive duration, got "-5s"`}},
		{"empty token", []string{"--token", ""},
			[]string{`--token: required, want a non-empty value, got nothing`}},
		{"empty host", []string{"--host", ""},
			[]string{`--host: required, want a non-empty value, got nothing`}},
		{"host that is not a host", []string{"--host", "my host"},
			[]string{`--host: want a host name or IP address, got "my host"`}},
		{"empty state dir", []string{"--state-dir", ""},
			[]string{`--state-dir: required, want a non-empty value, got nothing`}},
		{"kubeconfig that does not exist", []string{"--kubeconfig", missing},
			[]string{fmt.Sprintf(`--kubeconfig: want a path to an existing regular file, got %q`, missing)}},
		{"unknown session selector", []string{"--kube-sessions", "some"},
			[]string{`--kube-sessions: want all, none, projects=a,b or label=key=value, got "some"`}},
		{"two flags on one port", []string{"--api-rest-port", "4222"},
			[]string{`--api-rest-port: want a port no other flag uses, got "4222": NATS (--nats-port) uses it`}},
		{"a fixed port among the health ports", []string{"--proxy-port", "9093"},
			[]string{`--proxy-port: want a port no other flag uses, got "9093": agui-proxy health/metrics (--metrics-port-base) uses it`}},
		{"runner ports over a fixed port", []string{"--runner-ports", "4200-4300"},
			[]string{`--runner-ports: want a range clear of the stack's other ports, got "4200-4300": NATS (--nats-port) uses 4222`}},
		{"every bad flag at once", []string{"--log-level", "bogus", "--nats-port", "70000", "--stop-grace", "-5s"},
			[]string{"--log-level:", "--nats-port:", "--stop-grace:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if _, err := ParseFlags(tc.args, &out); err == nil {
				t.Errorf("ParseFlags(%q) accepted it; output %q", tc.args, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output %q\nwant it to contain %q", out.String(), w)
				}
			}
		})
	}
}

// TestValidFlagsAreAccepted: the checks refuse nothing that works, and the
// log level reaches the children in the services' spelling.
func TestValidFlagsAreAccepted(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--log-level", "DEBUG", "--runner-ports", "20000-20049", "--nats-port", "1", "--api-grpc-port", "65000",
		"--metrics-port-base", "65530", "--ready-timeout", "1ms", "--stop-grace", "1s", "--host", "::1",
		"--kubeconfig", kubeconfig, "--kube-sessions", "projects=a,b",
	}
	c, err := ParseFlags(args, io.Discard)
	if err != nil {
		t.Fatalf("ParseFlags(%q): %v", args, err)
	}
	if c.LogLevel != "debug" {
		t.Errorf("LogLevel = %q, want debug", c.LogLevel)
	}
}
