package deploytest

import (
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// chartVolumes are the names of the volumes the chart itself gives service
// pods (tmp, NATS credentials, the secrets of existing Secrets, runner
// workspaces, agui-proxy tokens).
var chartVolumes = []string{"tmp", "nats-password", "nats-creds", "acp-secrets", "workspaces", "agui-tokens"}

// allTracks are the values that render every Deployment of every component:
// each service with its canary, the shadow informer and its event-tally.
const allTracks = `
informer: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}}}
kubeReconciler: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}, partitions: "0-1"}}
runnerManager: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}, partitions: "2"}}
eventTally: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}, partitions: "3"}}
aguiProxy: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}, replicas: 1}}
`

// allDeployments are the Deployments allTracks renders, by component.
var allDeployments = map[string][]string{
	"informer":        {"informer", "informer-shadow"},
	"kube-reconciler": {"kube-reconciler", "kube-reconciler-canary"},
	"runner-manager":  {"runner-manager", "runner-manager-canary"},
	"agui-proxy":      {"agui-proxy", "agui-proxy-canary"},
	"event-tally":     {"event-tally", "event-tally-canary", "event-tally-shadow"},
}

// podVolumes returns a Deployment's volume names and, of its one container
// (named after the component), the mounts by volume name.
func podVolumes(t *testing.T, d *appsv1.Deployment) ([]string, map[string]corev1.VolumeMount) {
	t.Helper()
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 || spec.Containers[0].Name != d.Spec.Template.Labels["app.kubernetes.io/component"] {
		t.Fatalf("%s: want one container named after the component, got %d", d.Name, len(spec.Containers))
	}
	var names []string
	for _, v := range spec.Volumes {
		names = append(names, v.Name)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range spec.Containers[0].VolumeMounts {
		mounts[m.Name] = m
	}
	return names, mounts
}

// TestChartExtraVolumes: global.extraVolumes/extraVolumeMounts reach every
// service pod, a service's own reach every track of that service (canary,
// shadow) and no other, each mount in the service's container; without
// them a pod has only the chart's volumes. The files they mount are what
// the services' *_FILE variables (AMBIENT_GRPC_CA_FILE, NATS_CA_FILE, ...),
// set through extraEnv, need: the "extra-files-tls" value set runs the
// services' loaders on such an environment (TestChartServiceEnv).
func TestChartExtraVolumes(t *testing.T) {
	t.Parallel()
	t.Run("unset", func(t *testing.T) {
		t.Parallel()
		r := mustRender(t, localRunnersWith(t, allTracks))
		for comp, deps := range allDeployments {
			for _, dn := range deps {
				names, mounts := podVolumes(t, deployment(t, r, name(dn)))
				for _, n := range names {
					if !slices.Contains(chartVolumes, n) {
						t.Errorf("%s (%s): volume %q without extraVolumes", dn, comp, n)
					}
				}
				for n := range mounts {
					if !slices.Contains(chartVolumes, n) {
						t.Errorf("%s (%s): mount %q without extraVolumeMounts", dn, comp, n)
					}
				}
			}
		}
	})

	t.Run("global and per service", func(t *testing.T) {
		t.Parallel()
		vals := localRunnersWith(t, allTracks)
		mergeValues(vals, parseValues(t, `
global:
  extraVolumes: [{name: acp-ca, secret: {secretName: acp-ca, defaultMode: 0440}}]
  extraVolumeMounts: [{name: acp-ca, mountPath: /etc/acp/ca, readOnly: true}]
`))
		own := map[string]string{ // component -> values key
			"informer": "informer", "kube-reconciler": "kubeReconciler", "runner-manager": "runnerManager",
			"agui-proxy": "aguiProxy", "event-tally": "eventTally",
		}
		for comp, key := range own {
			mergeValues(vals, parseValues(t, key+`:
  extraVolumes: [{name: x-`+comp+`, configMap: {name: `+comp+`-files}}]
  extraVolumeMounts: [{name: x-`+comp+`, mountPath: /etc/acp/`+comp+`, subPath: "", readOnly: true}]
`))
		}
		r := mustRender(t, vals)
		seen := 0
		for comp, deps := range allDeployments {
			for _, dn := range deps {
				seen++
				d := deployment(t, r, name(dn))
				names, mounts := podVolumes(t, d)
				for _, want := range []struct{ volume, path string }{{"acp-ca", "/etc/acp/ca"}, {"x-" + comp, "/etc/acp/" + comp}} {
					if !slices.Contains(names, want.volume) {
						t.Errorf("%s: no volume %s in %v", dn, want.volume, names)
					}
					m, ok := mounts[want.volume]
					if !ok || m.MountPath != want.path || !m.ReadOnly {
						t.Errorf("%s: mount of %s = %+v, want read-only at %s", dn, want.volume, m, want.path)
					}
				}
				for _, n := range names {
					if strings.HasPrefix(n, "x-") && n != "x-"+comp {
						t.Errorf("%s (%s): has %s, another service's volume", dn, comp, n)
					}
				}
				// The chart's own volumes stay, and so does the restricted,
				// read-only-root security context.
				if !slices.Contains(names, "tmp") || mounts["tmp"].MountPath != "/tmp" {
					t.Errorf("%s: lost the chart's tmp volume: %v", dn, names)
				}
				checkPodSecurity(t, dn, d.Spec.Template.Spec)
			}
		}
		if got := len(r.ofKind("Deployment")); got != seen {
			t.Errorf("%d Deployments rendered, checked %d", got, seen)
		}
		// A Secret volume keeps its fields (the mode the non-root user
		// reads through fsGroup).
		v := deployment(t, r, name("informer-shadow")).Spec.Template.Spec.Volumes
		i := slices.IndexFunc(v, func(v corev1.Volume) bool { return v.Name == "acp-ca" })
		if i < 0 || v[i].Secret == nil || v[i].Secret.SecretName != "acp-ca" || v[i].Secret.DefaultMode == nil || *v[i].Secret.DefaultMode != 0o440 {
			t.Errorf("informer-shadow acp-ca volume = %+v", v)
		}
	})
}

// TestChartRejectsBadExtraVolumes: the schema refuses extraVolumes and
// extraVolumeMounts that are not lists of volumes and mounts, and the
// templates what the API server would refuse, naming the values.
func TestChartRejectsBadExtraVolumes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, values, wantErr string
	}{
		{"volumes not a list", `informer: {extraVolumes: {name: ca, secret: {secretName: ca}}}`, "/informer/extraVolumes'"},
		{"mounts not a list", `kubeReconciler: {extraVolumeMounts: "/etc/ca"}`, "/kubeReconciler/extraVolumeMounts'"},
		{"global volumes not a list", `global: {extraVolumes: {name: ca}}`, "/global/extraVolumes'"},
		{"global mounts not a list", `global: {extraVolumeMounts: {name: ca, mountPath: /etc/ca}}`, "/global/extraVolumeMounts'"},
		{"volume not an object", `eventTally: {extraVolumes: [ca]}`, "/eventTally/extraVolumes/0"},
		{"volume without a name", `aguiProxy: {extraVolumes: [{secret: {secretName: ca}}]}`, "/aguiProxy/extraVolumes/0"},
		{"volume name not a DNS label", `informer: {extraVolumes: [{name: CA_Bundle, secret: {secretName: ca}}]}`, "/informer/extraVolumes/0/name"},
		{"mount without a path", `informer: {extraVolumeMounts: [{name: ca}]}`, "/informer/extraVolumeMounts/0"},
		{"relative mount path", `informer: {extraVolumes: [{name: ca, secret: {secretName: ca}}], extraVolumeMounts: [{name: ca, mountPath: etc/ca}]}`, "/informer/extraVolumeMounts/0/mountPath"},
		{"volume named like the chart's", `informer: {extraVolumes: [{name: tmp, emptyDir: {}}]}`, `informer.extraVolumes/extraVolumeMounts: two volumes are named "tmp"`},
		{"volume in global and a service", `global: {extraVolumes: [{name: ca, secret: {secretName: ca}}]}
eventTally: {extraVolumes: [{name: ca, secret: {secretName: ca2}}]}`, `eventTally.extraVolumes/extraVolumeMounts: two volumes are named "ca"`},
		{"mount over /tmp", `aguiProxy: {extraVolumes: [{name: scratch, emptyDir: {}}], extraVolumeMounts: [{name: scratch, mountPath: /tmp/}]}`, `two volumes are mounted at "/tmp/"`},
		{"mount of a missing volume", `kubeReconciler: {extraVolumeMounts: [{name: ca, mountPath: /etc/acp/ca}]}`, `names volume "ca", which the pod does not have`},
		{"global mount of a service's volume", `global: {extraVolumeMounts: [{name: ca, mountPath: /etc/acp/ca}]}
informer: {extraVolumes: [{name: ca, secret: {secretName: ca}}]}`, `names volume "ca", which the pod does not have`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := render(t, parseValues(t, tc.values))
			if err == nil {
				t.Fatalf("values accepted:\n%s", tc.values)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
			if os.Getenv("DEPLOYTEST_VERBOSE") != "" {
				t.Logf("rejected: %v", err)
			}
		})
	}
}
