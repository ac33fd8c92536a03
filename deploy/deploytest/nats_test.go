package deploytest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"helm.sh/helm/v3/pkg/chart"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/registry"
)

// The NATS users of files/nats-permissions.yaml and the names the tests use.
const (
	natsPasswordEnvPrefix = "ACP_NATS_PASSWORD_"
	natsPasswordDir       = "/etc/ambient/nats-password"
	shadowPrefix          = "ambient.shadow.events"
	shadowStream          = "AMBIENT_EVENTS_SHADOW"
	// runnerMembersBucket is runner-manager's replica liveness bucket
	// (services/runner-manager/internal/claim.BucketMembers).
	runnerMembersBucket = "ambient-runner-members"
)

var natsUsers = []string{"agui-proxy", "event-tally", "informer", "informer-shadow", "kube-reconciler", "runner-manager"}

// natsSetup is a NATS configuration as a deployment lays it out: the
// server's config file, the server's environment (the password variables
// auth.conf reads) and the password file each service user is given.
type natsSetup struct {
	configFile    string
	serverEnv     map[string]string
	passwordFiles map[string]string // user -> file holding its password
}

// serverProbe renders the "acp.natsServer.*" templates the way the nats
// chart's $tplYaml hooks call them: in a context whose .Values is the nats:
// block. The nats chart is not vendored, so this is how the tests see what
// its server gets.
const serverProbe = `{{- $ctx := dict "Values" .Values.nats "Release" .Release }}
apiVersion: v1
kind: ConfigMap
metadata: {name: zz-nats-server-probe}
data:
  configMerge: {{ include "acp.natsServer.configMerge" $ctx | quote }}
  containerMerge: {{ include "acp.natsServer.containerMerge" $ctx | quote }}
  containerPatch: {{ include "acp.natsServer.containerPatch" $ctx | quote }}
  podPatch: {{ include "acp.natsServer.podPatch" $ctx | quote }}
`

// natsServerWiring is what the nats chart's server gets from this chart.
type natsServerWiring struct {
	include         string // the include directive's path, relative to nats.conf's directory
	envFromPrefix   string
	envFromSecret   string
	authMountPath   string
	authConfigMap   string
	valuesHookNames []string // the hooks in values.yaml
}

func renderWithProbe(t *testing.T, vals map[string]any) (rendered, natsServerWiring) {
	t.Helper()
	c := loadChart(t)
	c.Templates = append(c.Templates, &chart.File{Name: "templates/zz-nats-server-probe.yaml", Data: []byte(serverProbe)})
	r, err := renderChart(t, c, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	probe := r.find("ConfigMap", "zz-nats-server-probe")
	if probe == nil {
		t.Fatal("probe not rendered")
	}
	data, _, _ := unstructured.NestedStringMap(probe.Object, "data")
	var w natsServerWiring
	var merge map[string]string
	parseYAML(t, data["configMerge"], &merge)
	w.include = merge["ambientAuth$include"]
	var cm struct {
		EnvFrom []struct {
			Prefix    string `json:"prefix"`
			SecretRef struct {
				Name string `json:"name"`
			} `json:"secretRef"`
		} `json:"envFrom"`
	}
	parseYAML(t, data["containerMerge"], &cm)
	if len(cm.EnvFrom) == 1 {
		w.envFromPrefix, w.envFromSecret = cm.EnvFrom[0].Prefix, cm.EnvFrom[0].SecretRef.Name
	}
	var cp []struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value struct {
			Name      string `json:"name"`
			MountPath string `json:"mountPath"`
			ConfigMap struct {
				Name string `json:"name"`
			} `json:"configMap"`
		} `json:"value"`
	}
	parseYAML(t, data["containerPatch"], &cp)
	if len(cp) == 1 && cp[0].Op == "add" && cp[0].Path == "/volumeMounts/-" {
		w.authMountPath = cp[0].Value.MountPath
	}
	var pp = cp[:0:0]
	parseYAML(t, data["podPatch"], &pp)
	if len(pp) == 1 && pp[0].Op == "add" && pp[0].Path == "/spec/volumes/-" && (len(cp) == 0 || pp[0].Value.Name == cp[0].Value.Name) {
		w.authConfigMap = pp[0].Value.ConfigMap.Name
	}
	w.valuesHookNames = natsValuesHooks(t)
	r.objects = slices.DeleteFunc(r.objects, func(o *unstructured.Unstructured) bool { return o.GetName() == "zz-nats-server-probe" })
	return r, w
}

// natsValuesHooks returns the templates the nats: block of values.yaml calls
// through $tplYaml hooks, by where they sit.
func natsValuesHooks(t *testing.T) []string {
	t.Helper()
	var vals struct {
		NATS struct {
			Config struct {
				Merge map[string]map[string]string `json:"merge"`
			} `json:"config"`
			Container struct {
				Merge map[string]map[string]string `json:"merge"`
				Patch []map[string]string          `json:"patch"`
			} `json:"container"`
			PodTemplate struct {
				Patch []map[string]string `json:"patch"`
			} `json:"podTemplate"`
		} `json:"nats"`
	}
	parseYAML(t, string(readFile(t, "helm/ambient-control-plane/values.yaml")), &vals)
	n := vals.NATS
	hooks := []string{
		"config.merge=" + n.Config.Merge["ambientAuth"]["$tplYamlSpread"],
		"container.merge=" + n.Container.Merge["ambientAuth"]["$tplYamlSpread"],
	}
	for _, p := range n.Container.Patch {
		hooks = append(hooks, "container.patch="+p["$tplYamlSpread"])
	}
	for _, p := range n.PodTemplate.Patch {
		hooks = append(hooks, "podTemplate.patch="+p["$tplYamlSpread"])
	}
	return hooks
}

// TestChartNATSAuth: by default the bundled NATS authenticates one user per
// service: the auth.conf ConfigMap holds every user of
// files/nats-permissions.yaml with its password variable, the passwords
// Secret a random password per user, each Deployment its own user and only
// its own password file; the nats chart's values call the hooks that
// include auth.conf, pass the passwords and mount the file where the
// include finds it. Off, or with external NATS, none of it is rendered; an
// existing Secret is used instead of a generated one.
func TestChartNATSAuth(t *testing.T) {
	t.Parallel()
	r, w := renderWithProbe(t, localRunnersWith(t, `informer: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}}}`))
	wantHooks := []string{
		`config.merge={{ include "acp.natsServer.configMerge" $ }}`,
		`container.merge={{ include "acp.natsServer.containerMerge" $ }}`,
		`container.patch={{ include "acp.natsServer.containerPatch" $ }}`,
		`container.patch={{ include "acp.nats.serverSecurityPatch" $ }}`, // TestChartNATSSecurityContexts
		`podTemplate.patch={{ include "acp.natsServer.podPatch" $ }}`,
		`podTemplate.patch={{ include "acp.nats.podSecurityPatch" $ }}`,
	}
	if !slices.Equal(w.valuesHookNames, wantHooks) {
		t.Errorf("values.yaml nats hooks = %q, want %q", w.valuesHookNames, wantHooks)
	}
	cm := r.find("ConfigMap", "acp-nats-auth")
	if cm == nil {
		t.Fatal("no auth.conf ConfigMap acp-nats-auth")
	}
	if w.authConfigMap != "acp-nats-auth" {
		t.Errorf("the NATS pods mount ConfigMap %q, want acp-nats-auth", w.authConfigMap)
	}
	// The nats chart keeps nats.conf in /etc/nats-config and resolves
	// includes from there.
	if got := path.Join("/etc/nats-config", w.include); got != path.Join(w.authMountPath, "auth.conf") {
		t.Errorf("nats.conf includes %q (= %s), but auth.conf is mounted at %s", w.include, got, w.authMountPath)
	}
	if w.envFromPrefix != natsPasswordEnvPrefix || w.envFromSecret != "acp-nats-passwords" {
		t.Errorf("NATS server env from Secret %q with prefix %q, want acp-nats-passwords with %s", w.envFromSecret, w.envFromPrefix, natsPasswordEnvPrefix)
	}
	conf, _, _ := unstructured.NestedString(cm.Object, "data", "auth.conf")
	secret := r.find("Secret", "acp-nats-passwords")
	if secret == nil {
		t.Fatal("no generated passwords Secret acp-nats-passwords")
	}
	data, _, _ := unstructured.NestedStringMap(secret.Object, "data")
	for _, u := range natsUsers {
		key := strings.ReplaceAll(u, "-", "_")
		pw, err := base64.StdEncoding.DecodeString(data[key])
		if err != nil || len(pw) < 32 || !isAlnumStartingWithLetter(string(pw)) {
			t.Errorf("password of %s: %d characters, err %v; want 32+ letters and digits starting with a letter", u, len(pw), err)
		}
		if !strings.Contains(conf, fmt.Sprintf("user: %q\n      password: $%s%s\n", u, natsPasswordEnvPrefix, key)) {
			t.Errorf("auth.conf has no user %s with password $%s%s:\n%s", u, natsPasswordEnvPrefix, key, conf)
		}
	}
	if len(data) != len(natsUsers) {
		t.Errorf("Secret keys %v, want one per user %v", mapsKeys(data), natsUsers)
	}

	wantUser := map[string]string{name("informer-shadow"): "informer-shadow", name("event-tally-shadow"): "event-tally"}
	for _, u := range r.ofKind("Deployment") {
		d := toTyped[appsv1.Deployment](t, u)
		component := d.Spec.Template.Labels["app.kubernetes.io/component"]
		user := wantUser[d.Name]
		if user == "" {
			user = component
		}
		env := envOf(t, r, d)
		if env["NATS_USER"] != user || env["NATS_PASSWORD_FILE"] != natsPasswordDir+"/password" {
			t.Errorf("%s: NATS_USER=%q NATS_PASSWORD_FILE=%q, want %s and its password file", d.Name, env["NATS_USER"], env["NATS_PASSWORD_FILE"], user)
		}
		if _, ok := env["NATS_PASSWORD"]; ok {
			t.Errorf("%s: NATS_PASSWORD in the environment", d.Name)
		}
		var keys []string
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == "acp-nats-passwords" {
				for _, it := range v.Secret.Items {
					keys = append(keys, it.Key+"->"+it.Path)
				}
			}
		}
		if want := []string{strings.ReplaceAll(user, "-", "_") + "->password"}; !slices.Equal(keys, want) {
			t.Errorf("%s mounts password keys %v, want only its own %v", d.Name, keys, want)
		}
	}

	r, w = renderWithProbe(t, parseValues(t, `nats: {ambientAuth: {existingSecret: acp-nats-users}}`))
	if r.find("Secret", "acp-nats-passwords") != nil || w.envFromSecret != "acp-nats-users" {
		t.Errorf("existing Secret: generated Secret rendered or server reads %q", w.envFromSecret)
	}
	if env := envOf(t, r, deployment(t, r, name("informer"))); env["NATS_USER"] != "informer" {
		t.Errorf("existing Secret: informer NATS_USER = %q", env["NATS_USER"])
	}
	for _, vals := range []string{`nats: {ambientAuth: {enabled: false}}`, `{nats: {enabled: false}, externalNats: {url: "nats://n:4222"}}`} {
		r, w = renderWithProbe(t, parseValues(t, vals))
		if r.find("ConfigMap", "acp-nats-auth") != nil || r.find("Secret", "acp-nats-passwords") != nil {
			t.Errorf("%s: auth objects rendered", vals)
		}
		if env := envOf(t, r, deployment(t, r, name("informer"))); env["NATS_USER"] != "" {
			t.Errorf("%s: NATS_USER = %q", vals, env["NATS_USER"])
		}
		if strings.Contains(vals, "ambientAuth") && (w.include != "" || w.envFromSecret != "" || w.authMountPath != "") {
			t.Errorf("%s: the NATS server is still wired: %+v", vals, w)
		}
	}
}

func isAlnumStartingWithLetter(s string) bool {
	for i, c := range s {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return s != ""
}

// TestComposeNATSAuthUpToDate: the compose stack's NATS users are the
// chart's, byte for byte (deploy/nats/auth.conf is the chart's rendering of
// files/nats-permissions.yaml). UPDATE_GOLDEN=1 rewrites it.
func TestComposeNATSAuthUpToDate(t *testing.T) {
	t.Parallel()
	r := mustRender(t, map[string]any{})
	want, _, _ := unstructured.NestedString(r.find("ConfigMap", "acp-nats-auth").Object, "data", "auth.conf")
	file := filepath.Join(repoRoot(t), "deploy", "nats", "auth.conf")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(file, []byte(want), 0o644); err != nil { //nolint:gosec // a config file in the repository
			t.Fatal(err)
		}
	}
	if got := string(readFile(t, "deploy/nats/auth.conf")); got != want {
		t.Errorf("deploy/nats/auth.conf differs from the chart's rendering; run UPDATE_GOLDEN=1 go test -run TestComposeNATSAuthUpToDate ./... in deploy/deploytest\n--- got\n%s\n--- want\n%s", got, want)
	}
}

// chartNATS lays out the bundled NATS as the chart deploys it: nats.conf
// with the include the nats chart writes, auth.conf where the NATS pod
// mounts it, the server environment from the passwords Secret (envFrom with
// the prefix), and each Deployment's password file from its Secret item.
func chartNATS(t *testing.T) natsSetup {
	t.Helper()
	// Every user has a Deployment with these values (shadow informer, runner-manager).
	r, w := renderWithProbe(t, localRunnersWith(t, `informer: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}}}`))
	root := t.TempDir()
	conf, _, _ := unstructured.NestedString(r.find("ConfigMap", w.authConfigMap).Object, "data", "auth.conf")
	writeTestFile(t, filepath.Join(root, w.authMountPath, "auth.conf"), conf)
	natsConf := filepath.Join(root, "etc", "nats-config", "nats.conf")
	writeTestFile(t, natsConf, fmt.Sprintf("include %q;\n", w.include))

	data, _, _ := unstructured.NestedStringMap(r.find("Secret", w.envFromSecret).Object, "data")
	s := natsSetup{configFile: natsConf, serverEnv: map[string]string{}, passwordFiles: map[string]string{}}
	for k, v := range data {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatalf("Secret key %s: %v", k, err)
		}
		s.serverEnv[w.envFromPrefix+k] = string(b)
	}
	for _, u := range r.ofKind("Deployment") {
		d := toTyped[appsv1.Deployment](t, u)
		env := envOf(t, r, d)
		user := env["NATS_USER"]
		pod := filepath.Join(root, "pods", d.Name)
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret == nil || v.Secret.SecretName != w.envFromSecret {
				continue
			}
			var mount string
			for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
				if m.Name == v.Name {
					mount = m.MountPath
				}
			}
			for _, it := range v.Secret.Items {
				b, err := base64.StdEncoding.DecodeString(data[it.Key])
				if err != nil || len(b) == 0 {
					t.Fatalf("%s mounts key %s the Secret does not have", d.Name, it.Key)
				}
				writeTestFile(t, filepath.Join(pod, mount, it.Path), string(b))
			}
		}
		file := filepath.Join(pod, env["NATS_PASSWORD_FILE"])
		if _, err := os.Stat(file); err != nil {
			t.Fatalf("%s: NATS_PASSWORD_FILE %s is not a mounted file: %v", d.Name, env["NATS_PASSWORD_FILE"], err)
		}
		s.passwordFiles[user] = file
	}
	return s
}

// composeNATS is the compose stack's NATS: the nats service's config file
// (its include finds auth.conf beside it, where compose mounts it), its
// environment, and each service's secret file.
func composeNATS(t *testing.T) natsSetup {
	t.Helper()
	p := loadCompose(t, nil)
	n := p.Services["nats"]
	mounts := map[string]string{}
	for _, v := range n.Volumes {
		mounts[v.Target] = v.Source
	}
	conf, auth := mounts["/etc/nats/nats.conf"], mounts["/etc/nats/auth.conf"]
	if conf == "" || auth == "" || filepath.Dir(conf) != filepath.Dir(auth) || !slices.Contains(n.Command, "/etc/nats/nats.conf") {
		t.Fatalf("compose nats: nats.conf and auth.conf must be mounted side by side in /etc/nats (volumes %v, command %v)", mounts, n.Command)
	}
	s := natsSetup{configFile: conf, serverEnv: envOfService(n), passwordFiles: map[string]string{}}
	for _, svc := range p.Services {
		env := envOfService(svc)
		user := env["NATS_USER"]
		if user == "" {
			continue
		}
		for _, sec := range svc.Secrets {
			if "/run/secrets/"+sec.Target == env["NATS_PASSWORD_FILE"] {
				s.passwordFiles[user] = p.Secrets[sec.Source].File
			}
		}
		if s.passwordFiles[user] == "" {
			t.Fatalf("compose %s: NATS_PASSWORD_FILE %s is not one of its secrets", svc.Name, env["NATS_PASSWORD_FILE"])
		}
	}
	return s
}

// TestNATSPermissions is acceptance item 3 for NATS: with the chart's and
// compose's NATS settings, a real nats-server refuses connections without
// credentials, runs every service's NATS code paths from libs (stream and
// bucket set-up, publishing, KV puts and watches, consumer group joins,
// dead letters, the runner registry table) under that service's own user
// without a single permission error, and refuses each forbidden publish, KV
// write, JetStream API call and subscription, writing nothing.
//
// Not parallel: the server reads the passwords from its environment.
func TestNATSPermissions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*testing.T) natsSetup
	}{
		{"chart", chartNATS},
		{"compose", composeNATS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.setup(t)
			for k, v := range s.serverEnv {
				t.Setenv(k, v)
			}
			srv, err := natsserver.Start(natsserver.Options{StoreDir: t.TempDir(), Port: natsserver.RandomPort, ConfigFile: s.configFile})
			if err != nil {
				t.Fatalf("start nats-server with %s: %v", s.configFile, err)
			}
			t.Cleanup(srv.Shutdown)
			runPermissionScenario(t, srv.ClientURL(), s)
		})
	}
}

// natsUser is one service's connection, with the permission errors the
// server reported to it.
type natsUser struct {
	name string
	nc   *nats.Conn
	js   jetstream.JetStream
	errs *asyncErrors
}

// asyncErrors collects the "nats async error" records bus logs (permission
// violations arrive asynchronously).
type asyncErrors struct {
	mu   sync.Mutex
	errs []error // guarded by mu
}

func (a *asyncErrors) Enabled(context.Context, slog.Level) bool { return true }
func (a *asyncErrors) WithAttrs([]slog.Attr) slog.Handler       { return a }
func (a *asyncErrors) WithGroup(string) slog.Handler            { return a }
func (a *asyncErrors) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "nats async error" {
		return nil
	}
	r.Attrs(func(at slog.Attr) bool {
		if err, ok := at.Value.Any().(error); ok {
			a.mu.Lock()
			a.errs = append(a.errs, err)
			a.mu.Unlock()
		}
		return true
	})
	return nil
}

func (a *asyncErrors) all() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.errs)
}

// refused reports whether the server refused subject to this user (for a
// publish or, with sub, a subscription). nats.go reports the subject only in
// the error text of ErrPermissionViolation.
func (a *asyncErrors) refused(subject string, sub bool) bool {
	op := "publish to"
	if sub {
		op = "subscription to"
	}
	for _, err := range a.all() {
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(strings.ToLower(err.Error()), op+` "`+strings.ToLower(subject)+`"`) {
			return true
		}
	}
	return false
}

func connectUser(t *testing.T, url, user string, s natsSetup) *natsUser {
	t.Helper()
	file, ok := s.passwordFiles[user]
	if !ok {
		t.Fatalf("no password file for user %s", user)
	}
	errs := &asyncErrors{}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.ConnectConfig{URL: url, Name: user, User: user, PasswordFile: file}, slog.New(errs))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &natsUser{name: user, nc: nc, js: js, errs: errs}
}

// clean fails the test when the server refused anything to u so far: a
// service's own code path needs every subject it uses.
func (u *natsUser) clean(t *testing.T) {
	t.Helper()
	for _, err := range u.errs.all() {
		t.Errorf("%s: the server refused a subject its code uses: %v", u.name, err)
	}
}

func sessionEvent(t *testing.T, ctx context.Context, prefix, id string) *nats.Msg {
	t.Helper()
	s := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: id, Kind: "Session"}, Name: id, ProjectId: proto.String("p1")}
	msg, err := events.NewMsg(ctx, prefix, events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now()))
	if err != nil {
		t.Fatalf("event: %v", err)
	}
	return msg
}

// joinGroup runs group.Run as a member until the handler has seen an event
// of object id (the handler's result decides ack or dead letter), then
// leaves the group.
func joinGroup(t *testing.T, ctx context.Context, u *natsUser, cfg group.Config, id string, result error) group.StatsSnapshot {
	t.Helper()
	cfg.Member = u.name + "-0"
	cfg.MemberTTL, cfg.AckWait, cfg.MaxDeliver = time.Second, 2*time.Second, 1
	cfg.Stats = &group.Stats{}
	seen := make(chan struct{}, 1) // the first handling of id
	gctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1) // group.Run's result
	// Owned by this helper: cancelled and waited for below.
	go func() {
		done <- group.Run(gctx, u.js, cfg, func(_ context.Context, m group.Message) error {
			if m.Event.GetObjectId() == id {
				select {
				case seen <- struct{}{}:
				default:
				}
			}
			return result
		}, slog.New(u.errs))
	}()
	select {
	case <-seen:
	case err := <-done:
		cancel()
		t.Fatalf("%s: group %s stopped before handling %s: %v", u.name, cfg.Group, id, err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("%s: group %s did not deliver %s (Run: %v)", u.name, cfg.Group, id, <-done)
	}
	if result != nil {
		waitFor(t, 10*time.Second, func() error {
			if cfg.Stats.Snapshot().DeadLettered == 0 {
				return errors.New("not dead-lettered yet")
			}
			return nil
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("%s: group %s: %v", u.name, cfg.Group, err)
	}
	return cfg.Stats.Snapshot()
}

func waitFor(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		<-tick.C
	}
}

func runPermissionScenario(t *testing.T, url string, s natsSetup) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	t.Run("no credentials refused", func(t *testing.T) {
		if nc, err := nats.Connect(url); err == nil {
			nc.Close()
			t.Fatal("connected without credentials")
		}
		wrong := filepath.Join(t.TempDir(), "password")
		writeTestFile(t, wrong, "wrongPassword0")
		cctx, ccancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer ccancel()
		if _, err := bus.Connect(cctx, bus.ConnectConfig{URL: url, User: "informer", PasswordFile: wrong}, slog.New(&asyncErrors{})); !errors.Is(err, bus.ErrNotConnected) {
			t.Fatalf("wrong password: Connect = %v, want ErrNotConnected", err)
		}
	})

	users := map[string]*natsUser{}
	for _, u := range natsUsers {
		if _, ok := s.passwordFiles[u]; ok {
			users[u] = connectUser(t, url, u, s)
		}
	}
	inf, krc, rm, ap, et := users["informer"], users["kube-reconciler"], users["runner-manager"], users["agui-proxy"], users["event-tally"]
	if inf == nil || krc == nil || rm == nil || ap == nil || et == nil {
		t.Fatalf("users with a password file: %v", mapsKeys(s.passwordFiles))
	}
	var objects, runners jetstream.KeyValue

	// Each service's own code paths, in the order a deployment starts them.
	t.Run("informer", func(t *testing.T) {
		if _, err := bus.EnsureEventsStream(ctx, inf.js, 1, 0); err != nil {
			t.Fatal(err)
		}
		var err error
		if objects, err = bus.EnsureKV(ctx, inf.js, bus.ObjectsBucket(1)); err != nil {
			t.Fatal(err)
		}
		leases, err := bus.EnsureKV(ctx, inf.js, bus.LeasesBucket(1, 0))
		if err != nil {
			t.Fatal(err)
		}
		rev, err := leases.Create(ctx, "informer", []byte("informer-0"))
		if err != nil {
			t.Fatalf("take the lease: %v", err)
		}
		if _, err := leases.Update(ctx, "informer", []byte("informer-0"), rev); err != nil {
			t.Fatalf("renew the lease: %v", err)
		}
		if _, err := inf.js.PublishMsg(ctx, sessionEvent(t, ctx, events.SubjectPrefix, "s1"), jetstream.WithExpectStream(events.StreamName)); err != nil {
			t.Fatalf("publish: %v", err)
		}
		if _, err := objects.Put(ctx, events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, "s1"), []byte("s1")); err != nil {
			t.Fatal(err)
		}
		readAll(t, ctx, objects, "sessions.*")
		if err := objects.Delete(ctx, events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, "gone")); err != nil {
			t.Fatal(err)
		}
		// A new leader reads the stream's tail (publish.Tail).
		n := 0
		live, err := inf.js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		if err := bus.ReadStream(ctx, live, events.FilterSubject(events.SubjectPrefix, eventsv1.Resource_RESOURCE_SESSIONS), 1,
			func(jetstream.Msg) { n++ }); err != nil || n != 1 {
			t.Fatalf("read the events' tail: %d events, %v", n, err)
		}
		inf.clean(t)
	})
	if sh := users["informer-shadow"]; sh != nil {
		t.Run("informer-shadow", func(t *testing.T) {
			if _, err := bus.EnsureStream(ctx, sh.js, bus.EventsStream(shadowStream, shadowPrefix, 1, 0)); err != nil {
				t.Fatal(err)
			}
			oc := bus.ObjectsBucket(1)
			oc.Bucket += "-ambient-events-shadow"
			kv, err := bus.EnsureKV(ctx, sh.js, oc)
			if err != nil {
				t.Fatal(err)
			}
			leases, err := bus.EnsureKV(ctx, sh.js, bus.LeasesBucket(1, 0))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := leases.Create(ctx, "informer-ambient-events-shadow", []byte("shadow-0")); err != nil {
				t.Fatalf("take the shadow lease: %v", err)
			}
			if _, err := sh.js.PublishMsg(ctx, sessionEvent(t, ctx, shadowPrefix, "s1"), jetstream.WithExpectStream(shadowStream)); err != nil {
				t.Fatalf("publish: %v", err)
			}
			if _, err := kv.Put(ctx, "sessions.s1", []byte("s1")); err != nil {
				t.Fatal(err)
			}
			n := 0
			shadow, err := sh.js.Stream(ctx, shadowStream)
			if err != nil {
				t.Fatal(err)
			}
			if err := bus.ReadStream(ctx, shadow, events.FilterSubject(shadowPrefix, eventsv1.Resource_RESOURCE_SESSIONS), 1,
				func(jetstream.Msg) { n++ }); err != nil || n != 1 {
				t.Fatalf("read the shadow events' tail: %d events, %v", n, err)
			}
			sh.clean(t)
		})
	}
	t.Run("runner-manager", func(t *testing.T) {
		var err error
		if runners, err = bus.EnsureKV(ctx, rm.js, bus.RunnersBucket(1)); err != nil {
			t.Fatal(err)
		}
		members, err := bus.EnsureKV(ctx, rm.js, jetstream.KeyValueConfig{Bucket: runnerMembersBucket, TTL: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := members.Put(ctx, "runner-manager-0", []byte("{}")); err != nil {
			t.Fatal(err)
		}
		readAll(t, ctx, members, ">")
		ep := registry.Endpoint{SessionID: "s1", Owner: "runner-manager-0", Host: "127.0.0.1", Port: 9100, State: registry.StateRunning, StartedAt: time.Now().UTC()}
		rev, err := registry.Claim(ctx, runners, ep)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		if _, err := registry.Register(ctx, runners, ep, rev); err != nil {
			t.Fatalf("register: %v", err)
		}
		if _, err := registry.List(ctx, runners); err != nil {
			t.Fatalf("list: %v", err)
		}
		joinGroup(t, ctx, rm, group.Config{Group: "runner-manager", Resources: []eventsv1.Resource{eventsv1.Resource_RESOURCE_SESSIONS}}, "s1", nil)
		rm.clean(t)
	})
	t.Run("kube-reconciler", func(t *testing.T) {
		kv, err := krc.js.KeyValue(ctx, bus.BucketObjects)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Get(ctx, events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, "s1")); err != nil {
			t.Fatalf("read the objects cache: %v", err)
		}
		st := joinGroup(t, ctx, krc, group.Config{Group: "kube-reconciler"}, "s1", group.Terminal(errors.New("dead-letter it")))
		if st.DeadLettered != 1 {
			t.Errorf("dead letters = %d, want 1", st.DeadLettered)
		}
		krc.clean(t)
	})
	t.Run("event-tally", func(t *testing.T) {
		joinGroup(t, ctx, et, group.Config{Group: "event-tally"}, "s1", nil)
		if users["informer-shadow"] != nil {
			joinGroup(t, ctx, et, group.Config{Group: "event-tally", Stream: shadowStream, SubjectPrefix: shadowPrefix}, "s1", nil)
		}
		et.clean(t)
	})
	t.Run("agui-proxy", func(t *testing.T) {
		kv, err := ap.js.KeyValue(ctx, bus.BucketRunners)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := registry.Get(ctx, kv, "s1"); err != nil {
			t.Fatalf("get: %v", err)
		}
		table := registry.NewTable()
		tctx, tcancel := context.WithCancel(ctx)
		done := make(chan error, 1)                 // Table.Run's result
		go func() { done <- table.Run(tctx, kv) }() // owned here: cancelled and waited for below
		defer func() {
			tcancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("routing table: %v", err)
			}
		}()
		select {
		case <-table.Synced():
		case <-time.After(10 * time.Second):
			t.Fatal("routing table not synced")
		}
		if _, ok := table.Lookup("s1"); !ok {
			t.Fatal("routing table lacks s1")
		}
		// A change written by the runner-manager reaches the proxy's watch.
		if _, err := registry.Release(ctx, runners, "s1", "runner-manager-0"); err != nil {
			t.Fatalf("release: %v", err)
		}
		waitFor(t, 10*time.Second, func() error {
			if _, ok := table.Lookup("s1"); ok {
				return errors.New("s1 still routed after its release")
			}
			return nil
		})
		ap.clean(t)
	})

	// What each user must not do. Every publish is raw, as a stolen
	// credential would send it; the server must refuse it and store nothing.
	forbidden := map[string][]string{
		"informer": {"$KV.ambient-runners.forged", "$JS.API.STREAM.DELETE.KV_ambient-runners", "$KV.ambient-members-AMBIENT_EVENTS-kube-reconciler.forged",
			"$JS.API.CONSUMER.CREATE.AMBIENT_EVENTS-kube-reconciler.forged"},
		"informer-shadow": {"ambient.events.sessions.p1.forged", "$KV.ambient-objects.sessions.forged", "$KV.ambient-leases.informer",
			"$JS.API.STREAM.UPDATE.AMBIENT_EVENTS", "$JS.API.CONSUMER.CREATE.AMBIENT_EVENTS.forged"},
		"kube-reconciler": {"ambient.events.sessions.p1.forged", "$KV.ambient-objects.sessions.forged", "$KV.ambient-runners.forged",
			"$KV.elastic-consumer-groups.AMBIENT_EVENTS.runner-manager", "$KV.ambient-members-AMBIENT_EVENTS-runner-manager.forged",
			"ambient.dlq.runner-manager.forged", "$JS.API.STREAM.DELETE.AMBIENT_EVENTS", "$JS.API.STREAM.PURGE.AMBIENT_EVENTS",
			"$JS.API.STREAM.UPDATE.KV_ambient-objects"},
		"runner-manager": {"ambient.events.sessions.p1.forged", "$KV.ambient-objects.sessions.forged", "$KV.ambient-leases.informer",
			"$JS.API.STREAM.UPDATE.AMBIENT_EVENTS", "ambient.dlq.kube-reconciler.forged"},
		"agui-proxy": {"$KV.ambient-runners.forged", "ambient.events.sessions.p1.forged", "$JS.API.STREAM.CREATE.FORGED",
			"$JS.API.CONSUMER.CREATE.AMBIENT_EVENTS.forged", "$JS.API.DIRECT.GET.KV_ambient-objects.$KV.ambient-objects.sessions.s1",
			"$JS.API.STREAM.DELETE.KV_ambient-runners", "$JS.API.STREAM.PURGE.KV_ambient-runners"},
		"event-tally": {"$KV.ambient-objects.sessions.forged", "ambient.events.sessions.p1.forged", "$KV.ambient-runners.forged",
			"ambient.dlq.kube-reconciler.forged", "$JS.API.STREAM.DELETE.AMBIENT_DLQ", "$KV.elastic-consumer-groups.AMBIENT_EVENTS.kube-reconciler"},
	}
	for user, subjects := range forbidden {
		u := users[user]
		if u == nil {
			continue
		}
		// Nobody may answer another client's request (a forged KV reply or
		// delivery), nor listen to the events live.
		subjects = append(subjects, "_INBOX.forged")
		t.Run("forbidden/"+user, func(t *testing.T) {
			for _, subj := range subjects {
				if err := u.nc.Publish(subj, []byte(`{"host":"169.254.169.254"}`)); err != nil {
					t.Fatal(err)
				}
			}
			sub, err := u.nc.SubscribeSync("ambient.events.>")
			if err != nil {
				t.Fatal(err)
			}
			if err := u.nc.Flush(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, func() error {
				var missing []string
				for _, subj := range subjects {
					if !u.errs.refused(subj, false) {
						missing = append(missing, subj)
					}
				}
				if !u.errs.refused("ambient.events.>", true) {
					missing = append(missing, "subscribe ambient.events.>")
				}
				if len(missing) > 0 {
					return fmt.Errorf("not refused to %s: %v", user, missing)
				}
				return nil
			})
			if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrBadSubscription) {
				t.Fatal(err)
			}
		})
	}
	t.Run("nothing forged", func(t *testing.T) {
		if _, err := registry.Get(ctx, runners, "forged"); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("forged runner entry: %v", err)
		}
		if _, err := objects.Get(ctx, "sessions.forged"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("forged object: %v", err)
		}
		st, err := inf.js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		if n := st.CachedInfo().State.Msgs; n != 1 {
			t.Errorf("%s holds %d events, want the informer's 1", events.StreamName, n)
		}
	})
}

// readAll reads every entry of a bucket matching keys through a watch (the
// way the informer loads its cache and group membership lists members).
func readAll(t *testing.T, ctx context.Context, kv jetstream.KeyValue, keys string) {
	t.Helper()
	w, err := kv.Watch(ctx, keys, jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatalf("watch %s: %v", keys, err)
	}
	defer func() {
		if err := w.Stop(); err != nil {
			t.Errorf("stop watch: %v", err)
		}
	}()
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return
			}
		case <-ctx.Done():
			t.Fatalf("watch %s: %v", keys, ctx.Err())
		}
	}
}

func writeTestFile(t *testing.T, file, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func parseYAML(t *testing.T, s string, out any) {
	t.Helper()
	if strings.TrimSpace(s) == "" {
		return
	}
	if err := yaml.Unmarshal([]byte(s), out); err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
}
