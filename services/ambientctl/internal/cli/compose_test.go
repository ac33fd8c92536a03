package cli

import (
	"bufio"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
)

// published matches a compose port mapping bound to loopback,
// "- 127.0.0.1:HOST:CONTAINER".
var published = regexp.MustCompile(`^\s+- 127\.0\.0\.1:(\d+):\d+`)

// composePorts returns the host ports docker-compose.yaml publishes, each
// with the service that publishes it.
func composePorts(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../../../../docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() //nolint:errcheck // read-only
	ports := map[string]string{}
	inServices, service := false, ""
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		switch {
		case line == "services:":
			inServices = true
		case line != "" && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "#"):
			inServices = false // the next top-level key
		case inServices && strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") && strings.HasSuffix(line, ":"):
			service = strings.TrimSuffix(strings.TrimSpace(line), ":")
		case inServices:
			if m := published.FindStringSubmatch(line); m != nil {
				ports[m[1]] = service
			}
		}
	}
	return ports
}

// TestDefaultsReachTheComposeStack: every default endpoint of ambientctl
// is published by `docker compose up` on the same port as by `make run`, so
// the CLI works against either stack without flags.
func TestDefaultsReachTheComposeStack(t *testing.T) {
	ports := composePorts(t)
	for _, tc := range []struct{ flag, def, service string }{
		{"--api", "grpc://" + DefaultAPIAddr, "memapi"},
		{"--rest", DefaultRESTURL, "memapi"},
		{"--nats", DefaultNATSURL, "nats"},
		{"--proxy", DefaultProxyURL, "runner-manager"}, // agui-proxy shares its network
		{"--tally-url", DefaultTallyURL, "event-tally"},
	} {
		u, err := url.Parse(tc.def)
		if err != nil {
			t.Fatal(err)
		}
		if got := ports[u.Port()]; got != tc.service {
			t.Errorf("%s default %s: docker-compose.yaml publishes port %s for %q, want %s (compose publishes %v)", tc.flag, tc.def, u.Port(), got, tc.service, ports)
		}
	}
}
