package deploytest

import (
	"path"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// secretFileOf resolves file, a path a Deployment's container reads, to
// the Secret key the kubelet puts there ("name/key"), and the file's mode:
// the volume mounted at the file's directory must be read-only, and a
// secret volume or a projected volume of secrets with an item at the
// file's name. It returns "" when file is none of these.
func secretFileOf(t *testing.T, d *appsv1.Deployment, file string) (ref string, mode int32) {
	t.Helper()
	if file == "" {
		return "", 0
	}
	spec := d.Spec.Template.Spec
	dir, base := path.Split(file)
	var volume string
	for _, m := range spec.Containers[0].VolumeMounts {
		if strings.TrimSuffix(m.MountPath, "/") == strings.TrimSuffix(dir, "/") && m.SubPath == "" {
			if !m.ReadOnly {
				t.Errorf("%s: %s is mounted writable", d.Name, m.MountPath)
			}
			volume = m.Name
		}
	}
	for _, v := range spec.Volumes {
		if v.Name != volume {
			continue
		}
		switch {
		case v.Secret != nil:
			for _, it := range v.Secret.Items {
				if it.Path == base {
					return v.Secret.SecretName + "/" + it.Key, modeOf(it.Mode, v.Secret.DefaultMode)
				}
			}
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.Secret == nil {
					continue
				}
				for _, it := range src.Secret.Items {
					if it.Path == base {
						return src.Secret.Name + "/" + it.Key, modeOf(it.Mode, v.Projected.DefaultMode)
					}
				}
			}
		}
	}
	return "", 0
}

// modeOf is an item's mode: its own, else the volume's default, else the
// API server's default (0644).
func modeOf(item, def *int32) int32 {
	switch {
	case item != nil:
		return *item
	case def != nil:
		return *def
	}
	return 0o644
}

// TestChartSecretsAsFiles: the chart passes the secrets it takes from
// existing Secrets (the API token, an external NATS's password or token,
// the OTLP headers) as read-only files, never as variables: a variable shows in
// /proc/<pid>/environ and keeps its value when the Secret is rotated, while
// the kubelet updates a mounted file in place, which the services follow.
// The files are readable by the pod's user through the fsGroup the kubelet
// gives them (0440), or by all without an fsGroup (0444: root owns them
// then, and no other pod sees the volume). Existing values (the Secrets'
// names and keys) keep working. It passed the secrets as secretKeyRef
// variables before. runner-manager keeps them as variables: its local
// runners run as its user and could read its files, never its environment
// (it is non-dumpable; TestHostileRunner). The OTLP headers were
// secretKeyRef variables in every service before.
func TestChartSecretsAsFiles(t *testing.T) {
	t.Parallel()
	const groupOnly, all = 0o440, 0o444
	apiCallers := map[string]bool{"informer": true, "kube-reconciler": true, "runner-manager": true}
	tests := []struct {
		name   string
		values string
		// want are the files each component reads, by variable: the
		// Secret key behind it (components calling the API also read
		// AMBIENT_API_TOKEN_FILE, wantAPI).
		want    map[string]string
		wantAPI string
		mode    map[string]int32 // by component; groupOnly when absent
	}{
		{name: "defaults", wantAPI: "ambient-api-token/token"},
		{name: "an existing Secret's own name and key", values: `api: {tokenSecret: {name: api-creds, key: grpc.token}}`, wantAPI: "api-creds/grpc.token"},
		{
			name: "external NATS, user and password",
			values: `
nats: {enabled: false}
externalNats: {url: "nats://nats.messaging:4222", auth: {type: userPassword, secretName: nats-auth, passwordKey: pw}}`,
			want:    map[string]string{"NATS_PASSWORD_FILE": "nats-auth/pw"},
			wantAPI: "ambient-api-token/token",
		},
		{
			name: "external NATS, token",
			values: `
nats: {enabled: false}
externalNats: {url: "nats://nats.messaging:4222", auth: {type: token, secretName: nats-auth, tokenKey: t}}`,
			want:    map[string]string{"NATS_TOKEN_FILE": "nats-auth/t"},
			wantAPI: "ambient-api-token/token",
		},
		{
			name: "no fsGroup but a service's own",
			values: `
global: {podSecurityContext: {fsGroup: null}}
kubeReconciler: {podSecurityContext: {fsGroup: 1000700000}}
nats: {enabled: false}
externalNats: {url: "nats://nats.messaging:4222", auth: {type: token, secretName: nats-auth}}`,
			want:    map[string]string{"NATS_TOKEN_FILE": "nats-auth/token"},
			wantAPI: "ambient-api-token/token",
			mode:    map[string]int32{"informer": all, "runner-manager": all, "agui-proxy": all, "event-tally": all},
		},
		{
			name: "OTLP headers",
			values: `
global:
  otlpEndpoint: "http://otel-collector.monitoring:4317"
  otlpHeadersSecret: {name: otlp-auth, key: headers}
  otlpTraces: {headersSecret: {name: tempo-auth, key: h}}
  otlpMetrics: {headersSecret: {name: mimir-auth, key: otlp-headers}}`,
			want: map[string]string{
				"OTEL_EXPORTER_OTLP_HEADERS_FILE":         "otlp-auth/headers",
				"OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE":  "tempo-auth/h",
				"OTEL_EXPORTER_OTLP_METRICS_HEADERS_FILE": "mimir-auth/otlp-headers",
			},
			wantAPI: "ambient-api-token/token",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, localRunnersWith(t, tc.values))
			for _, c := range components {
				d := deployment(t, r, name(c))
				env := envOf(t, r, d)
				if c == "runner-manager" {
					wantSecretsInEnv(t, c, d, env, tc.want, tc.wantAPI)
					continue
				}
				for _, v := range []string{"AMBIENT_API_TOKEN", "NATS_PASSWORD", "NATS_TOKEN", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS"} {
					if got, ok := env[v]; ok {
						t.Errorf("%s: %s=%q in the environment, want only its file", c, v, got)
					}
				}
				want := map[string]string{}
				for k, v := range tc.want {
					want[k] = v
				}
				if apiCallers[c] {
					want["AMBIENT_API_TOKEN_FILE"] = tc.wantAPI
				} else if f, ok := env["AMBIENT_API_TOKEN_FILE"]; ok {
					t.Errorf("%s gets the API token (%s) but never calls the API", c, f)
				}
				wantMode, ok := tc.mode[c]
				if !ok {
					wantMode = groupOnly
				}
				for v, key := range want {
					got, mode := secretFileOf(t, d, env[v])
					if got != key {
						t.Errorf("%s: %s=%q holds %q, want the Secret key %s mounted there", c, v, env[v], got, key)
						continue
					}
					if mode != wantMode {
						t.Errorf("%s: %s mode %#o, want %#o", c, v, mode, wantMode)
					}
				}
			}
		})
	}
}

// TestChartNATSCredentialFileModes: the bundled NATS's password file and
// an external NATS's .creds file are readable by the pod's user whether or
// not the pod has an fsGroup, as acp-secrets' files are
// (TestChartSecretsAsFiles): 0440 to the fsGroup the kubelet gives them,
// 0444 without one (root owns them then, and no other pod sees the
// volume). They were 0440 either way: without an fsGroup a non-root
// service could not read its NATS credentials and never connected.
func TestChartNATSCredentialFileModes(t *testing.T) {
	t.Parallel()
	const groupOnly, all = 0o440, 0o444
	const noFSGroup = `
global: {podSecurityContext: {fsGroup: null}}
kubeReconciler: {podSecurityContext: {fsGroup: 1000700000}}`
	const externalCreds = `
nats: {enabled: false}
externalNats: {url: "nats://nats.messaging:4222", auth: {type: creds, secretName: nats-creds}}`
	tests := []struct {
		name, values, fileVar string
		mode                  map[string]int32 // by component; groupOnly when absent
	}{
		{name: "bundled NATS", fileVar: "NATS_PASSWORD_FILE"},
		{
			name: "bundled NATS, no fsGroup but a service's own", values: noFSGroup, fileVar: "NATS_PASSWORD_FILE",
			mode: map[string]int32{"informer": all, "runner-manager": all, "agui-proxy": all, "event-tally": all},
		},
		{name: "external NATS, creds", values: externalCreds, fileVar: "NATS_CREDS_FILE"},
		{
			name: "external NATS, creds, no fsGroup but a service's own", values: externalCreds + noFSGroup, fileVar: "NATS_CREDS_FILE",
			mode: map[string]int32{"informer": all, "runner-manager": all, "agui-proxy": all, "event-tally": all},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, localRunnersWith(t, tc.values))
			for _, c := range components {
				d := deployment(t, r, name(c))
				file := envOf(t, r, d)[tc.fileVar]
				ref, mode := secretFileOf(t, d, file)
				if ref == "" {
					t.Errorf("%s: %s=%q is no file of a Secret volume", c, tc.fileVar, file)
					continue
				}
				want, ok := tc.mode[c]
				if !ok {
					want = groupOnly
				}
				if mode != want {
					t.Errorf("%s: %s (%s) mode %#o, want %#o", c, tc.fileVar, ref, mode, want)
				}
			}
		})
	}
}

// TestChartAGUITokensFileMode: agui-proxy's tokens file (token auth) is
// readable by its non-root user with or without an fsGroup, as the other
// Secret volumes are (acp.secretFileMode); a fixed 0440 left it root's
// group's only, unreadable, in a pod without an fsGroup.
func TestChartAGUITokensFileMode(t *testing.T) {
	t.Parallel()
	const tokenAuth = `
aguiProxy: {auth: {mode: token, tokensSecret: {name: ambient-agui-tokens, key: tokens.txt}}}`
	tests := []struct {
		name, values string
		want         int32
	}{
		{name: "fsGroup", values: tokenAuth, want: 0o440},
		{name: "no fsGroup", values: tokenAuth + `
global: {podSecurityContext: {fsGroup: null}}`, want: 0o444},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, localRunnersWith(t, tc.values))
			d := deployment(t, r, name("agui-proxy"))
			file := envOf(t, r, d)["AGUI_TOKENS_FILE"]
			ref, mode := secretFileOf(t, d, file)
			switch {
			case ref == "":
				t.Errorf("AGUI_TOKENS_FILE=%q is no file of a Secret volume", file)
			case mode != tc.want:
				t.Errorf("AGUI_TOKENS_FILE (%s) mode %#o, want %#o", ref, mode, tc.want)
			}
		})
	}
}

// wantSecretsInEnv checks that component c (runner-manager) gets its secrets
// as secretKeyRef variables and mounts none of them: want names each file
// variable the others get (NATS_TOKEN_FILE) and its Secret key, apiKey the
// API token's.
func wantSecretsInEnv(t *testing.T, c string, d *appsv1.Deployment, env map[string]string, want map[string]string, apiKey string) {
	t.Helper()
	vars := map[string]string{"AMBIENT_API_TOKEN": apiKey}
	for k, key := range want {
		vars[strings.TrimSuffix(k, "_FILE")] = key
	}
	for v, key := range vars {
		if got := env[v]; got != "secret:"+key {
			t.Errorf("%s: %s = %q, want the Secret key %s as a variable (its runners could read a file)", c, v, got, key)
		}
		if f, ok := env[v+"_FILE"]; ok {
			t.Errorf("%s: %s_FILE=%q, want the variable only", c, v, f)
		}
	}
	for _, vol := range d.Spec.Template.Spec.Volumes {
		if vol.Name == "acp-secrets" {
			t.Errorf("%s mounts volume %s, want its secrets only in its environment", c, vol.Name)
		}
	}
}
