package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/service"
)

func TestFromEnvDefaults(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(envconfig.Map(nil))
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	d := Defaults()
	if c.ListenAddr != d.ListenAddr || c.Auth != "none" || c.MaxBodyBytes != d.MaxBodyBytes ||
		c.SSEKeepAlive != d.SSEKeepAlive || c.RunnersBucket != "ambient-runners" ||
		len(c.CORSOrigins) != 1 || c.CORSOrigins[0] != "http://localhost:3000" || c.NATS.URL != d.NATS.URL {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestFromEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		check   func(Config) bool
		wantErr []string // substrings of the error, each naming a variable
	}{
		{name: "token mode", env: map[string]string{EnvAuth: "token", EnvTokensFile: tokens, EnvListenAddr: ":9080", EnvAuthz: "api"},
			check: func(c Config) bool { return c.Auth == "token" && c.TokensFile == tokens }},
		{name: "jwt mode", env: map[string]string{EnvAuth: "JWT", EnvJWKSURL: "https://idp/jwks", EnvJWTIssuer: "i", EnvJWTAudience: "a"},
			check: func(c Config) bool { return c.Auth == "jwt" && c.JWKSURL.Host == "idp" }},
		{name: "none on loopback v6", env: map[string]string{EnvListenAddr: "[::1]:0"}},
		{name: "none on localhost", env: map[string]string{EnvListenAddr: "localhost:9080"}},
		{name: "none on all interfaces refused", env: map[string]string{EnvListenAddr: ":9080"},
			wantErr: []string{"AGUI_AUTH: want token or jwt when LOCAL_PROXY_ADDR is not a loopback address"}},
		{name: "none on public ip refused", env: map[string]string{EnvListenAddr: "0.0.0.0:9080"}, wantErr: []string{"AGUI_AUTH"}},
		{name: "none off loopback overridden", env: map[string]string{EnvListenAddr: "0.0.0.0:9080", EnvAuthInsecure: "true", EnvAuthzInsecure: "true"},
			check: func(c Config) bool { return c.AuthAllowInsecure && c.AuthzAllowInsecure }},
		{name: "authz none off loopback refused", env: map[string]string{EnvListenAddr: ":9080", EnvAuth: "token", EnvTokensFile: tokens},
			wantErr: []string{"AGUI_AUTHZ: want api or kube when LOCAL_PROXY_ADDR is not a loopback address"}},
		{name: "authz api", env: map[string]string{EnvAuthz: "api", EnvAPIURL: "https://api.example:8000"},
			check: func(c Config) bool { return c.Authz == "api" && c.APIURL.Host == "api.example:8000" }},
		{name: "authz api default url", env: map[string]string{EnvAuthz: "api"},
			check: func(c Config) bool { return c.APIURL.String() == "http://localhost:8000" }},
		{name: "authz api bad url", env: map[string]string{EnvAuthz: "api", EnvAPIURL: "grpc://api:9000"}, wantErr: []string{"AMBIENT_API_SERVER_URL"}},
		{name: "authz kube needs jwt", env: map[string]string{EnvAuthz: "kube"}, wantErr: []string{"AGUI_AUTHZ: want kube only with AGUI_AUTH=jwt"}},
		{name: "authz kube", env: map[string]string{EnvAuthz: "kube", EnvAuth: "jwt", EnvJWKSURL: "https://idp/jwks", EnvJWTIssuer: "i", EnvJWTAudience: "a",
			EnvNamespace: "acp", EnvJWTGroupsClaim: "roles"},
			check: func(c Config) bool {
				return c.Authz == "kube" && c.Namespace == "acp" && c.JWTGroupsClaim == "roles" && c.JWTUsernameClaim == "sub"
			}},
		// kube-reconciler refuses the same NAMESPACE; accepted here, every
		// session without a project would be denied by the review.
		{name: "namespace not a label", env: kubeAuthz(EnvNamespace, "Ambient_Code"),
			wantErr: []string{`NAMESPACE: want a namespace name (RFC 1123 label), got "Ambient_Code"`}},
		{name: "namespace with a space", env: kubeAuthz(EnvNamespace, "ambient-code "), wantErr: []string{"NAMESPACE"}},
		{name: "kubeconfig missing", env: kubeAuthz(EnvKubeconfig, "/nonexistent/kubeconfig"), wantErr: []string{"KUBECONFIG"}},
		// The installation whose project namespaces the reviews ask in:
		// kube-reconciler's default, and its rule for a value.
		{name: "instance default", env: kubeAuthz(EnvNamespace, "acp"),
			check: func(c Config) bool { return c.Instance == "default" }},
		{name: "instance", env: kubeAuthz(EnvInstance, "acp-green"),
			check: func(c Config) bool { return c.Instance == "acp-green" }},
		{name: "instance not a label value", env: kubeAuthz(EnvInstance, "green/blue"),
			wantErr: []string{`CONTROL_PLANE_INSTANCE: want a non-empty label value (63 characters of letters, digits, '-', '_', '.'), got "green/blue"`}},
		{name: "instance too long", env: kubeAuthz(EnvInstance, strings.Repeat("g", 64)), wantErr: []string{"CONTROL_PLANE_INSTANCE"}},
		{name: "instance unused", env: map[string]string{EnvAuthz: "api", EnvInstance: "green/blue"},
			check: func(c Config) bool { return c.Instance == "green/blue" }},
		// Only kube mode reads them: `make run` hands the developer's
		// shell environment to the proxy, where they may be anything.
		{name: "namespace and kubeconfig unused", env: map[string]string{EnvNamespace: "Ambient_Code", EnvKubeconfig: "/a/config:/b/config"},
			check: func(c Config) bool { return c.Kubeconfig == "" }},
		{name: "authz unknown", env: map[string]string{EnvAuthz: "rbac"}, wantErr: []string{"AGUI_AUTHZ: want one of none|api|kube"}},
		{name: "authz cache", env: map[string]string{EnvAuthzCacheTTL: "0", EnvAuthzCacheSize: "5"},
			check: func(c Config) bool { return c.AuthzCacheTTL == 0 && c.AuthzCacheSize == 5 }},
		{name: "authz cache size zero", env: map[string]string{EnvAuthzCacheSize: "0"}, wantErr: []string{"AGUI_AUTHZ_CACHE_SIZE"}},
		{name: "jwks over http refused", env: map[string]string{EnvAuth: "jwt", EnvJWKSURL: "http://idp.example/jwks", EnvJWTIssuer: "i", EnvJWTAudience: "a"},
			wantErr: []string{"AGUI_JWKS_URL: want an https URL (http only for a loopback host)"}},
		{name: "jwks over http on loopback", env: map[string]string{EnvAuth: "jwt", EnvJWKSURL: "http://127.0.0.1:8080/jwks", EnvJWTIssuer: "i", EnvJWTAudience: "a"},
			check: func(c Config) bool { return c.JWKSURL.Scheme == "http" }},
		{name: "runner networks default", env: map[string]string{},
			check: func(c Config) bool {
				return len(c.RunnerNetworks) == 2 && c.RunnerNetworks[0].String() == "127.0.0.0/8" && c.RunnerNetworks[1].String() == "::1/128"
			}},
		{name: "runner networks", env: map[string]string{EnvRunnerNetworks: "10.244.0.0/16, 192.0.2.7, 127.0.0.0/8"},
			check: func(c Config) bool {
				return len(c.RunnerNetworks) == 3 && c.RunnerNetworks[1].String() == "192.0.2.7/32" && c.RunnerNetworks[2].String() == "127.0.0.0/8"
			}},
		{name: "runner networks bad", env: map[string]string{EnvRunnerNetworks: "10.0.0.0/33"}, wantErr: []string{"RUNNER_ALLOWED_NETWORKS: want comma-separated CIDRs"}},
		// Before, masked without a word: the single address meant became
		// the whole /16 (and 127.0.0.1/8 loopback).
		{name: "runner network with host bits", env: map[string]string{EnvRunnerNetworks: "10.0.0.0/8,10.244.1.17/16"},
			wantErr: []string{`RUNNER_ALLOWED_NETWORKS: want comma-separated CIDRs`, `"10.244.1.17/16" has bits set beyond its /16 prefix: write the network, 10.244.0.0/16, or the single address, 10.244.1.17/32`}},
		{name: "runner IPv6 network with host bits", env: map[string]string{EnvRunnerNetworks: "fd00:0:0:1::17/64"},
			wantErr: []string{`"fd00:0:0:1::17/64" has bits set beyond its /64 prefix: write the network, fd00:0:0:1::/64, or the single address, fd00:0:0:1::17/128`}},
		{name: "runner loopback with host bits", env: map[string]string{EnvRunnerNetworks: "127.0.0.1/8"},
			wantErr: []string{`"127.0.0.1/8" has bits set beyond its /8 prefix: write the network, 127.0.0.0/8, or the single address, 127.0.0.1/32`}},
		// Before, accepted and never matched: runner addresses are
		// compared as IPv4.
		{name: "runner IPv4-mapped network", env: map[string]string{EnvRunnerNetworks: "::ffff:10.0.0.0/104"},
			wantErr: []string{`"::ffff:10.0.0.0/104" is an IPv4-mapped IPv6 network, which no runner address matches (they are compared as IPv4): write the IPv4 network, 10.0.0.0/8`}},
		{name: "runner IPv4-mapped address", env: map[string]string{EnvRunnerNetworks: "::ffff:10.0.0.1"},
			wantErr: []string{`write the IPv4 network, 10.0.0.1/32`}},
		{name: "runners bucket", env: map[string]string{EnvRunnersBucket: "my_runners-2"},
			check: func(c Config) bool { return c.RunnersBucket == "my_runners-2" }},
		{name: "runners bucket with a dot", env: map[string]string{EnvRunnersBucket: "bad.name"},
			wantErr: []string{`RUNNERS_BUCKET: want a KV bucket name of letters, digits, "-" and "_"`}},
		{name: "runners bucket with a space", env: map[string]string{EnvRunnersBucket: "has space"}, wantErr: []string{"RUNNERS_BUCKET"}},
		{name: "runners bucket with a wildcard", env: map[string]string{EnvRunnersBucket: "runners.*"}, wantErr: []string{"RUNNERS_BUCKET"}},
		{name: "routes stale after default", env: map[string]string{},
			check: func(c Config) bool { return c.RoutesStaleAfter == 10*time.Second }},
		{name: "routes stale after", env: map[string]string{EnvRoutesStaleAfter: "45s"},
			check: func(c Config) bool { return c.RoutesStaleAfter == 45*time.Second }},
		// Zero is no bound, the hazard it is for; below a second the
		// heartbeat would ask too often and the table flap stale.
		{name: "routes stale after zero", env: map[string]string{EnvRoutesStaleAfter: "0"},
			wantErr: []string{`ROUTES_STALE_AFTER: want a duration of at least 1s, got "0s"`}},
		{name: "routes stale after too short", env: map[string]string{EnvRoutesStaleAfter: "500ms"}, wantErr: []string{"ROUTES_STALE_AFTER"}},
		{name: "routes stale after not a duration", env: map[string]string{EnvRoutesStaleAfter: "soon"}, wantErr: []string{"ROUTES_STALE_AFTER"}},
		{name: "stream write timeout zero", env: map[string]string{EnvStreamWrite: "0"}, wantErr: []string{"STREAM_WRITE_TIMEOUT"}},
		{name: "upstream timeouts zero", env: map[string]string{EnvUpstreamDial: "0", EnvUpstreamHeader: "0s", EnvUpstreamTimeout: "0"},
			wantErr: []string{"UPSTREAM_DIAL_TIMEOUT: want a positive duration", "UPSTREAM_HEADER_TIMEOUT: want a positive duration",
				"UPSTREAM_TIMEOUT: want a positive duration"}},
		{name: "server timeouts zero", env: map[string]string{EnvReadHeaderTimeout: "0", EnvShutdownTimeout: "0s"},
			wantErr: []string{"HTTP_READ_HEADER_TIMEOUT: want a positive duration", "SHUTDOWN_TIMEOUT: want a positive duration"}},
		{name: "upstream timeouts", env: map[string]string{EnvUpstreamDial: "1s", EnvUpstreamHeader: "2s", EnvUpstreamTimeout: "3s"},
			check: func(c Config) bool {
				return c.UpstreamDialTimeout == time.Second && c.UpstreamHeaderTimeout == 2*time.Second && c.UpstreamTimeout == 3*time.Second
			}},
		{name: "token without file", env: map[string]string{EnvAuth: "token"}, wantErr: []string{"AGUI_TOKENS_FILE: required"}},
		{name: "tokens file missing", env: map[string]string{EnvAuth: "token", EnvTokensFile: filepath.Join(dir, "nope")},
			wantErr: []string{"AGUI_TOKENS_FILE: want a path to an existing regular file"}},
		{name: "jwt incomplete", env: map[string]string{EnvAuth: "jwt"},
			wantErr: []string{"AGUI_JWKS_URL", "AGUI_JWT_ISSUER", "AGUI_JWT_AUDIENCE"}},
		{name: "unknown mode", env: map[string]string{EnvAuth: "basic"}, wantErr: []string{"AGUI_AUTH: want one of none|token|jwt"}},
		{name: "cors list", env: map[string]string{EnvCORSOrigins: "https://a.example, http://b.example:8080"},
			check: func(c Config) bool { return len(c.CORSOrigins) == 2 && c.CORSOrigins[1] == "http://b.example:8080" }},
		{name: "cors star", env: map[string]string{EnvCORSOrigins: "*"}, check: func(c Config) bool { return c.CORSAllowsAny() }},
		{name: "cors with path", env: map[string]string{EnvCORSOrigins: "https://a.example/app"}, wantErr: []string{"CORS_ALLOWED_ORIGIN"}},
		{name: "keepalive off", env: map[string]string{EnvSSEKeepAlive: "0"}, check: func(c Config) bool { return c.SSEKeepAlive == 0 }},
		{name: "body limit", env: map[string]string{EnvMaxBodyBytes: "1024"}, check: func(c Config) bool { return c.MaxBodyBytes == 1024 }},
		{name: "bad values all reported", env: map[string]string{EnvMaxBodyBytes: "-1", EnvSSEKeepAlive: "5", EnvWriteTimeout: "soon", EnvListenAddr: "nohost"},
			wantErr: []string{"MAX_BODY_BYTES", "SSE_KEEPALIVE", "HTTP_WRITE_TIMEOUT", "LOCAL_PROXY_ADDR"}},
		{name: "bad metrics addr", env: map[string]string{service.EnvMetricsAddr: "9090"}, wantErr: []string{"METRICS_ADDR"}},
		{name: "metrics disabled", env: map[string]string{service.EnvMetricsAddr: ""}, check: func(c Config) bool { return c.MetricsAddr != "" }},
		{name: "timeouts", env: map[string]string{EnvReadHeaderTimeout: "2s", EnvUpstreamTimeout: "1m"},
			check: func(c Config) bool { return c.ReadHeaderTimeout == 2*time.Second && c.UpstreamTimeout == time.Minute }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := FromEnv(envconfig.Map(tc.env))
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("FromEnv = %+v, want error", c)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("FromEnv: %v", err)
			}
			if tc.check != nil && !tc.check(c) {
				t.Fatalf("config = %+v", c)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:9080", true}, {"127.1.2.3:0", true}, {"[::1]:9080", true}, {"localhost:1", true},
		{":9080", false}, {"0.0.0.0:9080", false}, {"[::]:9080", false}, {"10.0.0.1:9080", false},
		{"example.com:80", false}, {"garbage", false},
	}
	for _, tc := range tests {
		if got := IsLoopback(tc.addr); got != tc.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// kubeAuthz is a valid AGUI_AUTHZ=kube environment with name set to value.
func kubeAuthz(name, value string) map[string]string {
	env := map[string]string{EnvAuthz: "kube", EnvAuth: "jwt", EnvJWKSURL: "https://idp/jwks", EnvJWTIssuer: "i", EnvJWTAudience: "a"}
	env[name] = value
	return env
}
