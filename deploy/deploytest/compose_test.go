package deploytest

import (
	"bufio"
	"bytes"
	"cmp"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// loadCompose loads docker-compose.yaml like `docker compose --profile '*'
// config` would, with only env as the environment (plus a fixed HOME), so
// the result does not depend on the machine.
func loadCompose(t *testing.T, env map[string]string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	list := []string{"HOME=/home/deploytest"}
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, "docker-compose.yaml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(list),
		cli.WithProfiles([]string{"*"}),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("load docker-compose.yaml: %v", err)
	}
	return p
}

// envOfService returns a compose service's resolved environment.
func envOfService(s types.ServiceConfig) map[string]string {
	env := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			env[k] = *v
		}
	}
	return env
}

// portOf returns the port of a "host:port" listen address.
func portOf(t *testing.T, what, addr string) uint32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: %q is not host:port: %v", what, addr, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Fatalf("%s: bad port in %q", what, addr)
	}
	return uint32(n)
}

var (
	natsConfPort  = regexp.MustCompile(`(?m)^\s*(?:port|http_port):\s*(\d+)\s*$`)
	bindFlag      = regexp.MustCompile(`^--[a-z-]+-bindaddress=(.*)$`)
	listenEnvVars = []string{"METRICS_ADDR", "LOCAL_PROXY_ADDR", "MEMAPI_GRPC_ADDR", "MEMAPI_REST_ADDR"}
)

// listens returns the ports a compose service listens on, from its
// environment, its command line or its config file.
func listens(t *testing.T, p *types.Project, s types.ServiceConfig) []uint32 {
	t.Helper()
	var ports []uint32
	env := envOfService(s)
	for _, k := range listenEnvVars {
		if v, ok := env[k]; ok && v != "" {
			ports = append(ports, portOf(t, s.Name+" "+k, v))
		}
	}
	for _, arg := range append(slices.Clone(s.Entrypoint), s.Command...) {
		if m := bindFlag.FindStringSubmatch(arg); m != nil {
			ports = append(ports, portOf(t, s.Name+" "+arg, m[1]))
		}
	}
	switch s.Name {
	case "nats":
		for _, m := range natsConfPort.FindAllStringSubmatch(string(readFile(t, "deploy/nats/nats.conf")), -1) {
			n, _ := strconv.ParseUint(m[1], 10, 16) // \d+ matched
			ports = append(ports, uint32(n))
		}
	case "postgres":
		ports = append(ports, 5432)
	}
	return ports
}

// netnsOwner is the service whose network namespace s uses.
func netnsOwner(s types.ServiceConfig) string {
	if owner, ok := strings.CutPrefix(s.NetworkMode, "service:"); ok {
		return owner
	}
	return s.Name
}

// netnsPorts returns every port listened on in the network namespace owned by owner.
func netnsPorts(t *testing.T, p *types.Project, owner string) []uint32 {
	t.Helper()
	var ports []uint32
	for _, s := range p.Services {
		if netnsOwner(s) == owner {
			ports = append(ports, listens(t, p, s)...)
		}
	}
	return ports
}

// serviceRef matches "service:port" inside URLs and addresses.
var serviceRef = regexp.MustCompile(`(?:^|//|,|@)([a-z][a-z0-9-]*):(\d{1,5})\b`)

// TestCompose loads docker-compose.yaml with compose-go and checks it is
// consistent: images come from deploy/Dockerfile targets, ports are bound to
// loopback and point at something listening, every service:port reference
// names a service that listens there and is waited for, health checks probe
// listening ports, our containers are hardened, and each service's
// environment is accepted by that service's own configuration.
func TestCompose(t *testing.T) {
	t.Parallel()
	df := parseDockerfile(t, "deploy/Dockerfile")
	envs := []struct {
		name string
		env  map[string]string
	}{
		{"in-memory API", nil},
		{"real API", map[string]string{"AMBIENT_GRPC_SERVER_ADDR": "ambient-api-server:9000"}},
	}
	for _, e := range envs {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			p := loadCompose(t, e.env)
			for _, name := range mapsKeys(p.Services) {
				s := p.Services[name]
				t.Run(name, func(t *testing.T) {
					checkComposeService(t, p, df, s)
				})
			}
		})
	}
}

// TestComposeAguiProxyAuthzAPI: AGUI_AUTHZ=api (offered by the agui-proxy's
// environment) asks the ambient API's REST port at AMBIENT_API_SERVER_URL
// for every session request. The proxy shares runner-manager's network, so
// its default, http://localhost:8000, reaches no API (every request would be
// 503): the compose file must name the API that runs, the in-memory one by
// default and the real one when AMBIENT_API_SERVER_URL says so, and wait
// for it.
func TestComposeAguiProxyAuthzAPI(t *testing.T) {
	t.Parallel()
	df := parseDockerfile(t, "deploy/Dockerfile")
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string // the API service asked
	}{
		{"in-memory API", map[string]string{"AGUI_AUTHZ": "api"}, "memapi"},
		{"real API", map[string]string{"AGUI_AUTHZ": "api", "AMBIENT_GRPC_SERVER_ADDR": "ambient-api-server:9000", "AMBIENT_API_SERVER_URL": "http://ambient-api-server:8000"}, "ambient-api-server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := loadCompose(t, tc.env)
			proxy := p.Services["agui-proxy"]
			env := envOfService(proxy)
			if env["AGUI_AUTHZ"] != "api" {
				t.Fatalf("AGUI_AUTHZ = %q, want api", env["AGUI_AUTHZ"])
			}
			raw, ok := env["AMBIENT_API_SERVER_URL"]
			if !ok {
				t.Fatalf("AGUI_AUTHZ=api without AMBIENT_API_SERVER_URL: the proxy asks http://localhost:8000, in runner-manager's network, where no API listens")
			}
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatalf("AMBIENT_API_SERVER_URL=%q: %v", raw, err)
			}
			host, port := u.Hostname(), u.Port()
			if port == "" {
				port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
			}
			if host != tc.want {
				t.Fatalf("AMBIENT_API_SERVER_URL=%q asks %q, want the %s service", raw, host, tc.want)
			}
			n, _ := strconv.ParseUint(port, 10, 16)
			if !slices.Contains(netnsPorts(t, p, host), uint32(n)) {
				t.Errorf("AMBIENT_API_SERVER_URL=%q: %s does not listen on %s (listening: %v)", raw, host, port, netnsPorts(t, p, host))
			}
			if d, ok := proxy.DependsOn[host]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("AMBIENT_API_SERVER_URL=%q: agui-proxy does not wait for %s to be healthy", raw, host)
			}
			checkComposeService(t, p, df, proxy)
		})
	}
}

// TestComposeRunnersSendTheFirstPromptThroughTheProxy: runner-manager
// tells its runners (RUNNER_BACKEND_API_URL, passed on as BACKEND_API_URL)
// to send their first prompt to agui-proxy, at an address and port the
// proxy listens on in the network namespace the runners share with it;
// without it the platform's runner never runs INITIAL_PROMPT. It was
// unset before.
func TestComposeRunnersSendTheFirstPromptThroughTheProxy(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, nil)
	raw := envOfService(p.Services["runner-manager"])["RUNNER_BACKEND_API_URL"]
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" {
		t.Fatalf("runner-manager's RUNNER_BACKEND_API_URL = %q (%v): want agui-proxy's http URL", raw, err)
	}
	proxy := p.Services["agui-proxy"]
	if netnsOwner(proxy) != "runner-manager" || !net.ParseIP(u.Hostname()).IsLoopback() {
		t.Fatalf("RUNNER_BACKEND_API_URL = %q: the runners reach agui-proxy on loopback only while it shares runner-manager's network (network_mode %q)", raw, proxy.NetworkMode)
	}
	n, _ := strconv.ParseUint(u.Port(), 10, 16)
	if want := portOf(t, "agui-proxy LOCAL_PROXY_ADDR", envOfService(proxy)["LOCAL_PROXY_ADDR"]); uint32(n) != want {
		t.Errorf("RUNNER_BACKEND_API_URL = %q: agui-proxy listens on port %d", raw, want)
	}
}

// TestComposeAPITokenAsSecretFile: the API token reaches memapi and the
// services that call it as one compose secret, a file
// (AMBIENT_API_TOKEN_FILE), never as a variable, which `docker inspect`
// and /proc/<pid>/environ show; memapi and its callers mount the same
// secret, so they hold the same token, and the file holds a token both
// accept. It was the variable AMBIENT_API_TOKEN before.
func TestComposeAPITokenAsSecretFile(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, nil)
	sources := map[string]string{} // by service: the file behind its secret
	for _, name := range []string{"memapi", "informer", "runner-manager", "kube-reconciler"} {
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		env := envOfService(s)
		if v, ok := env["AMBIENT_API_TOKEN"]; ok {
			t.Errorf("%s: AMBIENT_API_TOKEN=%q in its environment, want the token as a secret file only", name, v)
		}
		file := env["AMBIENT_API_TOKEN_FILE"]
		for _, sec := range s.Secrets {
			if secretTarget(sec) == file {
				sources[name] = p.Secrets[sec.Source].File
			}
		}
		if sources[name] == "" {
			t.Errorf("%s: AMBIENT_API_TOKEN_FILE=%q is no compose secret mounted in it", name, file)
		}
	}
	if sources["memapi"] == "" {
		return
	}
	for name, src := range sources {
		if src != sources["memapi"] {
			t.Errorf("%s's API token is %s, memapi's %s: the calls would be refused", name, src, sources["memapi"])
		}
	}
	if _, err := envconfig.ReadSecretFile(sources["memapi"]); err != nil {
		t.Errorf("the API token's secret file: %v", err)
	}
}

// secretTarget is where compose mounts a service's secret.
func secretTarget(sec types.ServiceSecretConfig) string {
	target := cmp.Or(sec.Target, sec.Source)
	if !strings.HasPrefix(target, "/") {
		target = "/run/secrets/" + target
	}
	return target
}

func mapsKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func checkComposeService(t *testing.T, p *types.Project, df dockerfile, s types.ServiceConfig) {
	t.Helper()
	ours := s.Build != nil
	for _, port := range s.Ports {
		if port.HostIP != "127.0.0.1" {
			t.Errorf("port %s:%d is published on %q, want 127.0.0.1", port.Published, port.Target, port.HostIP)
		}
		if !slices.Contains(netnsPorts(t, p, s.Name), port.Target) {
			t.Errorf("publishes container port %d, but nothing in its network listens there (listening: %v)", port.Target, netnsPorts(t, p, s.Name))
		}
	}
	if strings.HasSuffix(s.Image, ":latest") && ours {
		t.Errorf("image %s: our images are tagged with VERSION", s.Image)
	}
	if ours {
		if s.Build.Dockerfile != "deploy/Dockerfile" && !strings.HasSuffix(s.Build.Dockerfile, "/deploy/Dockerfile") {
			t.Errorf("build.dockerfile = %q", s.Build.Dockerfile)
		}
		if !slices.Contains(imageTargets, s.Build.Target) || df.stages[s.Build.Target].Name == "" {
			t.Errorf("build.target %q is not a deploy/Dockerfile image target", s.Build.Target)
		}
		if s.User != "65532:65532" || !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("not hardened: user=%q read_only=%v cap_drop=%v security_opt=%v", s.User, s.ReadOnly, s.CapDrop, s.SecurityOpt)
		}
	}
	// Health checks probe a port this service's network listens on.
	if hc := s.HealthCheck; hc != nil && !hc.Disable {
		joined := strings.Join(hc.Test, " ")
		if m := regexp.MustCompile(`(?:127\.0\.0\.1|localhost):(\d+)`).FindStringSubmatch(joined); m != nil {
			port, _ := strconv.ParseUint(m[1], 10, 16) // \d+ matched
			if !slices.Contains(netnsPorts(t, p, netnsOwner(s)), uint32(port)) {
				t.Errorf("health check %q probes port %s; listening: %v", joined, m[1], netnsPorts(t, p, netnsOwner(s)))
			}
		}
		if ours && (len(hc.Test) < 2 || hc.Test[0] != "CMD" || hc.Test[1] != "/usr/local/bin/httpcheck") {
			t.Errorf("health check %v: distroless images have no shell; use /usr/local/bin/httpcheck", hc.Test)
		}
	} else if ours || s.Name == "nats" {
		t.Error("no health check")
	}
	// depends_on: conditions need what they wait for.
	for dep, d := range s.DependsOn {
		target, ok := p.Services[dep]
		if !ok {
			t.Errorf("depends on unknown service %s", dep)
			continue
		}
		if d.Condition == types.ServiceConditionHealthy && target.HealthCheck == nil {
			t.Errorf("waits for %s to be healthy, but it has no health check", dep)
		}
	}
	if owner := netnsOwner(s); owner != s.Name {
		if d, ok := s.DependsOn[owner]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("shares %s's network but does not wait for it to be healthy", owner)
		}
	}
	// Every service:port in the environment names a listening service that
	// this one waits for.
	env := envOfService(s)
	for _, k := range mapsKeys(env) {
		for _, m := range serviceRef.FindAllStringSubmatch(env[k], -1) {
			host, port := m[1], m[2]
			target, ok := p.Services[host]
			if !ok {
				continue // not a compose service (e.g. an external host)
			}
			n, _ := strconv.ParseUint(port, 10, 16) // \d{1,5} matched
			if !slices.Contains(netnsPorts(t, p, netnsOwner(target)), uint32(n)) {
				t.Errorf("%s=%q: %s does not listen on %s (listening: %v)", k, env[k], host, port, netnsPorts(t, p, netnsOwner(target)))
			}
			if _, waits := s.DependsOn[netnsOwner(target)]; !waits {
				t.Errorf("%s=%q: %s does not depend_on %s", k, env[k], s.Name, host)
			}
		}
	}
	if ours {
		checkServiceEnv(t, s)
	}
	switch s.Name {
	case "runner-manager":
		// The default runner is the demo runner the image ships.
		cmd := env["LOCAL_RUNNER_COMMAND"]
		if !imageHasFile(df, "runner-manager", strings.Fields(cmd)[0]) {
			t.Errorf("LOCAL_RUNNER_COMMAND=%q is not in the runner-manager image", cmd)
		}
	case "kube-reconciler":
		if !slices.Contains(s.Profiles, "kube") {
			t.Error("kube-reconciler must be behind the kube profile")
		}
		// Same allow-list as the chart's RBAC and ROLE_ALLOW_LIST.
		r := mustRender(t, map[string]any{})
		chartEnv := envOf(t, r, deployment(t, r, name("kube-reconciler")))
		if env["ROLE_ALLOW_LIST"] != chartEnv["ROLE_ALLOW_LIST"] {
			t.Errorf("ROLE_ALLOW_LIST = %q, the chart uses %q", env["ROLE_ALLOW_LIST"], chartEnv["ROLE_ALLOW_LIST"])
		}
	case "ambient-api-server", "postgres", "ambient-api-migrate":
		if !slices.Contains(s.Profiles, "real-api") {
			t.Errorf("%s must be behind the real-api profile", s.Name)
		}
	}
}

// imageHasFile reports whether a Dockerfile target COPYs a file to path.
func imageHasFile(df dockerfile, target, path string) bool {
	for _, st := range df.chain(target) {
		for _, cmd := range st.Commands {
			c, ok := cmd.(*instructions.CopyCommand)
			if !ok {
				continue
			}
			for _, src := range c.SourcePaths {
				dest := c.DestPath
				if strings.HasSuffix(dest, "/") {
					dest += filepath.Base(src)
				}
				if dest == path {
					return true
				}
			}
		}
	}
	return false
}

// checkServiceEnv checks a service's environment against the variables its
// config package declares and, where the service exposes one, against its
// own config loader (see envcheck_test.go).
func checkServiceEnv(t *testing.T, s types.ServiceConfig) {
	t.Helper()
	env := envOfService(s)
	if declared, ok := declaredEnv(t, s.Build.Target); ok {
		for _, k := range mapsKeys(env) {
			if !declared[k] {
				t.Errorf("sets %s, which %s never reads (declared: %v)", k, s.Build.Target, mapsKeys(declared))
			}
		}
	} else {
		t.Logf("%s declares no env names yet: name check skipped", s.Build.Target)
	}
	if _, ok := loaderCalls[s.Build.Target]; !ok {
		return // memapi: flags with env defaults, no loader; names checked above
	}
	var mounts []string
	for _, v := range s.Volumes {
		mounts = append(mounts, v.Target)
	}
	for _, sec := range s.Secrets {
		mounts = append(mounts, secretTarget(sec))
	}
	materialize(t, env, mounts)
	res := checkEnvs(t, s.Build.Target, []envCase{{ID: s.Name, Env: env}})
	for _, e := range res[s.Name] {
		t.Errorf("%s's own config loader rejects the compose environment: %s", s.Build.Target, e.Msg)
	}
}

// envConst matches `EnvX = "NAME"` constants in a config package.
var envConst = regexp.MustCompile(`\bEnv[A-Za-z0-9]*\s*=\s*"([A-Z][A-Z0-9_]*)"`)

// envLookup matches env names read directly (the memapi command).
var envLookup = regexp.MustCompile(`(?:envOr|Getenv|LookupEnv)\("([A-Z][A-Z0-9_]*)"`)

// sharedLoaders are the libs loaders a service config may call, and the
// file declaring the variables each reads.
var sharedLoaders = map[string]string{
	"bus.LoadConnectConfig(": "libs/bus/env.go",
	"apiclient.LoadEnv(":     "libs/apiclient/env.go",
	"service.LoadConfig(":    "libs/service/config.go",
	"group.LoadConfig(":      "libs/group/load.go",
	"telemetry.LoadEnv(":     "libs/telemetry/env.go",
	// Called by telemetry.LoadEnv: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES.
	"checkResourceEnv(l)": "libs/telemetry/resource.go",
}

// declaredEnv returns the environment variables an image target's program
// declares: the Env constants of services/<name>/internal/config plus those
// of the shared loaders it calls, or the names libs/cmd/memapi reads. ok is
// false when the package is not there yet.
func declaredEnv(t *testing.T, target string) (map[string]bool, bool) {
	t.Helper()
	root := repoRoot(t)
	var files []string
	re := envConst
	if target == "memapi" {
		files = []string{filepath.Join(root, "libs", "cmd", "memapi", "main.go")}
		re = envLookup
	} else {
		var err error
		files, err = filepath.Glob(filepath.Join(root, "services", target, "internal", "config", "*.go"))
		if err != nil {
			t.Fatalf("glob: %v", err)
		}
	}
	names := map[string]bool{}
	for i := 0; i < len(files); i++ {
		f := files[i]
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		for call, decl := range sharedLoaders {
			if decl := filepath.Join(root, decl); bytes.Contains(b, []byte(call)) && !slices.Contains(files, decl) {
				files = append(files, decl)
			}
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			for _, m := range re.FindAllStringSubmatch(sc.Text(), -1) {
				names[m[1]] = true
			}
		}
		if strings.HasSuffix(f, filepath.FromSlash(sharedLoaders["telemetry.LoadEnv("])) {
			for _, n := range otlpBuiltEnv(t, b) {
				names[n] = true
			}
		}
	}
	return names, len(names) > 0
}

// otlpBuiltEnv returns the OTLP exporter variables libs/telemetry checks
// under names it builds rather than declares (checkSDKEnv: the prefix
// OTEL_EXPORTER_OTLP_, a signal "", "TRACES_" or "METRICS_", then
// base+"HEADERS" and the like), read from the file's text src so a
// variable it stops reading drops out.
func otlpBuiltEnv(t *testing.T, src []byte) []string {
	t.Helper()
	prefix := regexp.MustCompile(`envOTLPPrefix\s*=\s*"([A-Z_]+)"`).FindSubmatch(src)
	if prefix == nil {
		t.Fatal("libs/telemetry/env.go: no envOTLPPrefix; update otlpBuiltEnv")
	}
	var out []string
	for _, m := range regexp.MustCompile(`\bbase\s*\+\s*"([A-Z_]+)"`).FindAllSubmatch(src, -1) {
		for _, signal := range []string{"", "TRACES_", "METRICS_"} {
			out = append(out, string(prefix[1])+signal+string(m[1]))
		}
	}
	if !slices.Contains(out, "OTEL_EXPORTER_OTLP_METRICS_HEADERS") {
		t.Fatalf("libs/telemetry/env.go: built OTLP variables %q lack the headers; update otlpBuiltEnv", out)
	}
	return out
}
