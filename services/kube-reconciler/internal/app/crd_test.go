package app

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/crd"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const dropMsg = "field not declared by the agenticsession crd, dropped"

// crdWait bounds what waits on an informer that listed a missing resource:
// its reflector retries with a backoff of up to 30 s.
const crdWait = 90 * time.Second

// chartCRD returns the chart's (the operator's) CRD, changed by mut.
func chartCRD(t testing.TB, mut func(sp *apiextensionsv1.JSONSchemaProps)) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	c, err := kubetest.LoadCRD()
	if err != nil {
		t.Fatal(err)
	}
	if mut != nil {
		root := c.Spec.Versions[0].Schema.OpenAPIV3Schema
		sp := root.Properties["spec"]
		mut(&sp)
		root.Properties["spec"] = sp
	}
	return c
}

// fullRequest sets every session field the mapping reads; created by
// harness.creator, the session also has a creator (spec.userContext).
func fullRequest(name, pid string) *ambientv1.CreateSessionRequest {
	return &ambientv1.CreateSessionRequest{Name: name, ProjectId: ptr(pid), Prompt: ptr("p"), Timeout: ptr(int32(60)),
		LlmModel: ptr("opus"), LlmTemperature: ptr(0.2), LlmMaxTokens: ptr(int32(100)), BotAccountName: ptr("bot"),
		Repos:             ptr(`[{"url":"https://git/a","name":"front"}]`),
		ResourceOverrides: ptr(`{"cpu":"2"}`), EnvironmentVariables: ptr(`{"A":"1"}`)}
}

// waitWrittenBack waits until the session carries its CR's uid and namespace.
func (h *harness) waitWrittenBack(t *testing.T, id, ns, name string) {
	t.Helper()
	testenv.Eventually(t, crdWait, func() error {
		u, err := h.cr(t, ns, name)
		if err != nil {
			return err
		}
		s, err := h.cl.GetSession(t.Context(), id)
		if err != nil {
			return err
		}
		if s.GetKubeCrUid() != string(u.GetUID()) || s.GetKubeNamespace() != ns {
			return fmt.Errorf("kube_cr_uid/namespace = %q/%q, want %q/%q", s.GetKubeCrUid(), s.GetKubeNamespace(), u.GetUID(), ns)
		}
		return nil
	})
}

// TestOlderCRDThenUpgraded: on an older operator CRD without llmSettings,
// sessions with LLM settings still get their AgenticSessions, without the
// field, and the dropped path is logged once for all of them. When the CRD
// gains llmSettings at runtime (operator upgrade), the next apply carries it,
// with no restart and no further drop.
func TestOlderCRDThenUpgraded(t *testing.T) {
	older := chartCRD(t, func(sp *apiextensionsv1.JSONSchemaProps) { delete(sp.Properties, "llmSettings") })
	env := kubetest.StartT(t, kubetest.WithCRDs(older))
	h := newHarnessOn(t, env)
	r := h.start(t, "older1", nil, nil)
	ctx := t.Context()
	name := unique("older")
	pid := h.project(t, name).GetMetadata().GetId()

	var sessions []*ambientv1.Session
	for i := range 3 {
		s, err := h.creator.CreateSession(ctx, fullRequest(fmt.Sprint("s", i), pid))
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	for _, s := range sessions {
		crName := lower(s.GetKubeCrName())
		h.waitCR(t, name, crName, func(u *unstructured.Unstructured) error {
			if _, found, _ := unstructured.NestedMap(u.Object, "spec", "llmSettings"); found {
				return fmt.Errorf("spec.llmSettings on a crd without it")
			}
			if got, _, _ := unstructured.NestedString(u.Object, "spec", "initialPrompt"); got != "p" {
				return fmt.Errorf("initialPrompt = %q", got)
			}
			return nil
		})
		h.waitWrittenBack(t, s.GetMetadata().GetId(), name, crName)
	}
	h.quiesce(t, r)
	drops := r.logs.Lines(t, dropMsg, nil)
	if len(drops) != 1 || drops[0][logkey.FieldPath] != "spec.llmSettings" {
		t.Errorf("drop log lines = %v, want one for spec.llmSettings", drops)
	}
	if bad := r.logs.Grep("not declared in schema", "handling failed", "dead-lettered", "InvalidSpec"); len(bad) > 0 {
		t.Errorf("apply errors logged:\n%s", strings.Join(bad, "\n"))
	}

	// The operator is upgraded: its CRD now declares llmSettings.
	crds := apiext(t, env).ApiextensionsV1().CustomResourceDefinitions()
	cur, err := crds.Get(ctx, crd.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Versions = chartCRD(t, nil).Spec.Versions
	updated, err := crds.Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The replica's informer has the new CRD in its cache once it logs it.
	testenv.Eventually(t, wait, func() error {
		if len(r.logs.Lines(t, "agenticsession crd changed", map[string]string{logkey.Version: updated.ResourceVersion})) == 0 {
			return fmt.Errorf("replica has not seen crd resourceVersion %s", updated.ResourceVersion)
		}
		return nil
	})
	wantLLM := map[string]any{"model": "opus", "temperature": 0.2, "maxTokens": int64(100)}
	hasLLM := func(u *unstructured.Unstructured) error {
		got, _, _ := unstructured.NestedMap(u.Object, "spec", "llmSettings")
		if fmt.Sprint(got) != fmt.Sprint(wantLLM) {
			return fmt.Errorf("spec.llmSettings = %v, want %v", got, wantLLM)
		}
		return nil
	}
	// An existing session's next change, and a new session, carry the field.
	if _, err := h.cl.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: sessions[0].GetMetadata().GetId(), Prompt: ptr("p2")}); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, name, lower(sessions[0].GetKubeCrName()), hasLLM)
	s, err := h.creator.CreateSession(ctx, fullRequest("after", pid))
	if err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, name, lower(s.GetKubeCrName()), hasLLM)
	h.quiesce(t, r)
	if n := len(r.logs.Lines(t, dropMsg, nil)); n != 1 {
		t.Errorf("%d drop log lines after the upgrade, want still 1", n)
	}
}

// TestMissingCRD: without the AgenticSession CRD the reconciler is not ready
// and says why, a session's event is retried instead of applied blind, and
// projects are still reconciled. Once the CRD is installed the retried event
// creates the AgenticSession and readiness recovers.
func TestMissingCRD(t *testing.T) {
	env := kubetest.StartT(t, kubetest.WithCRDs())
	h := newHarnessOn(t, env)
	r := h.start(t, "nocrd1", nil, map[string]string{group.EnvMaxDeliver: "50"})
	ctx := t.Context()
	name := unique("nocrd")
	pid := h.project(t, name).GetMetadata().GetId()

	readyz := func() (health.Report, error) {
		var rep health.Report
		err := json.Unmarshal([]byte(get(t, "http://"+r.addr.String()+"/readyz")), &rep)
		return rep, err
	}
	testenv.Eventually(t, wait, func() error {
		rep, err := readyz()
		if err != nil {
			return err
		}
		if !slices.Contains(rep.Failing, "crd") || !strings.Contains(rep.Checks["crd"].Error, "not installed") {
			return fmt.Errorf("readyz = %+v, want crd failing as not installed", rep)
		}
		return nil
	})

	s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "waits", ProjectId: ptr(pid), Prompt: ptr("p")})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if len(r.logs.Grep("crd agenticsessions.vteam.ambient-code not installed")) == 0 || r.stats.Snapshot().Retried == 0 {
			return fmt.Errorf("session event not retried with the reason yet")
		}
		return nil
	})
	// The project's namespace does not wait for the CRD.
	if _, err := h.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Errorf("namespace of the project: %v", err)
	}
	if got, err := h.cl.GetSession(ctx, s.GetMetadata().GetId()); err != nil || got.GetPhase() == "Failed" {
		t.Errorf("session = %v, %v; want not failed (the missing crd is not the session's fault)", got, err)
	}

	if _, err := apiext(t, env).ApiextensionsV1().CustomResourceDefinitions().Create(ctx, chartCRD(t, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, name, lower(s.GetKubeCrName()), nil)
	h.waitWrittenBack(t, s.GetMetadata().GetId(), name, lower(s.GetKubeCrName()))
	testenv.Eventually(t, crdWait, func() error {
		rep, err := readyz()
		if err != nil {
			return err
		}
		if len(rep.Failing) > 0 {
			return fmt.Errorf("readyz failing %v: %+v", rep.Failing, rep.Checks)
		}
		return nil
	})
}

func apiext(t testing.TB, env *kubetest.Env) apiextclient.Interface {
	t.Helper()
	c, err := apiextclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
