package deploytest

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// instanceComponents are the services that must name one installation
// alike: kube-reconciler labels its project namespaces with
// CONTROL_PLANE_INSTANCE, and the agui-proxy (authz mode kube) asks only in
// the namespaces labelled with its own value. Different values would deny
// every session, and a proxy without the value asked in another
// installation's namespace of a project with the same id.
var instanceComponents = []string{"kube-reconciler", "agui-proxy"}

// TestChartAguiProxyInstance: in authz mode kube every agui-proxy
// Deployment (canary included) gets the kube-reconciler's
// CONTROL_PLANE_INSTANCE, for the default release and for one whose
// instance is shortened to a hash (names past 63 characters).
func TestChartAguiProxyInstance(t *testing.T) {
	t.Parallel()
	var kube map[string]any
	for _, vs := range valueSets(t) {
		if vs.name == "authz-kube" {
			kube = vs.vals
		}
	}
	if kube == nil {
		t.Fatal("no authz-kube value set")
	}
	// valueSets parses its values anew on each call: kube is ours to merge into.
	vals := mergeValues(kube, parseValues(t, allTracks))
	for _, rel := range []struct{ name, namespace string }{
		{releaseName, releaseNamespace},
		{"release-one", strings.Repeat("n", 63)},
	} {
		r, err := renderRelease(t, loadChart(t), rel.name, rel.namespace, vals)
		if err != nil {
			t.Fatalf("render %s/%s: %v", rel.namespace, rel.name, err)
		}
		got := map[string][]string{} // component -> instance of each Deployment
		for _, u := range r.ofKind("Deployment") {
			d := toTyped[appsv1.Deployment](t, u)
			component := d.Spec.Template.Labels["app.kubernetes.io/component"]
			for _, c := range instanceComponents {
				if component == c {
					got[c] = append(got[c], d.Name+"="+envOf(t, r, d)["CONTROL_PLANE_INSTANCE"])
				}
			}
		}
		instances := map[string]bool{}
		for _, c := range instanceComponents {
			if len(got[c]) != 2 {
				t.Fatalf("%s/%s: %s Deployments with their instance %v, want the main one and the canary", rel.namespace, rel.name, c, got[c])
			}
			for _, v := range got[c] {
				_, instance, _ := strings.Cut(v, "=")
				instances[instance] = true
			}
		}
		if len(instances) != 1 || instances[""] {
			t.Errorf("%s/%s: CONTROL_PLANE_INSTANCE differs or is empty: %v", rel.namespace, rel.name, got)
		}
	}
}

// TestComposeAguiProxyInstance: the compose file passes the agui-proxy the
// kube-reconciler's CONTROL_PLANE_INSTANCE, its default and a value from the
// environment.
func TestComposeAguiProxyInstance(t *testing.T) {
	t.Parallel()
	for _, env := range []map[string]string{nil, {"CONTROL_PLANE_INSTANCE": "green"}} {
		p := loadCompose(t, env)
		want := env["CONTROL_PLANE_INSTANCE"]
		if want == "" {
			want = "default"
		}
		for _, c := range instanceComponents {
			s, ok := p.Services[c]
			if !ok {
				t.Fatalf("compose has no %s service", c)
			}
			if got := envOfService(s)["CONTROL_PLANE_INSTANCE"]; got != want {
				t.Errorf("environment %v: %s CONTROL_PLANE_INSTANCE = %q, want %q", env, c, got, want)
			}
		}
	}
}
