package crd_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
	"github.com/google/go-cmp/cmp"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

// operatorFields is the transcription of UPSTREAM-BEHAVIOUR.md, "The real
// AgenticSession CRD": every property of the operator's v1alpha1 schema with
// its type, format, enum and required list. Formats are not in the facts;
// they are those of the operator's published CRD for the same fields
// (date-time for times, int64 for generations).
var operatorFields = []string{
	"(root) object",
	"spec object",
	"spec.activeWorkflow object",
	"spec.activeWorkflow.branch string",
	"spec.activeWorkflow.gitUrl string",
	"spec.activeWorkflow.path string",
	"spec.displayName string",
	"spec.environmentVariables object",
	"spec.environmentVariables{} string",
	"spec.inactivityTimeout integer",
	"spec.initialPrompt string",
	"spec.llmSettings object",
	"spec.llmSettings.maxTokens integer",
	"spec.llmSettings.model string",
	"spec.llmSettings.temperature number",
	"spec.repos array",
	"spec.repos[] object required=url",
	"spec.repos[].autoPush boolean",
	"spec.repos[].branch string",
	"spec.repos[].url string",
	"spec.timeout integer",
	"spec.userContext object",
	"spec.userContext.displayName string",
	"spec.userContext.groups array",
	"spec.userContext.groups[] string",
	"spec.userContext.userId string",
	"status object",
	"status.completionTime string format=date-time",
	"status.conditions array",
	"status.conditions[] object required=type,status",
	"status.conditions[].lastTransitionTime string format=date-time",
	"status.conditions[].message string",
	"status.conditions[].observedGeneration integer format=int64",
	"status.conditions[].reason string",
	"status.conditions[].status string enum=True,False,Unknown",
	"status.conditions[].type string",
	"status.lastActivityTime string format=date-time",
	"status.observedGeneration integer format=int64",
	"status.phase string enum=Pending,Creating,Running,Stopping,Stopped,Completed,Failed",
	"status.reconciledRepos array",
	"status.reconciledRepos[] object",
	"status.reconciledRepos[].branch string",
	"status.reconciledRepos[].branches array",
	"status.reconciledRepos[].branches[] string",
	"status.reconciledRepos[].clonedAt string format=date-time",
	"status.reconciledRepos[].currentActiveBranch string",
	"status.reconciledRepos[].defaultBranch string",
	"status.reconciledRepos[].name string",
	"status.reconciledRepos[].status string enum=Cloning,Ready,Failed",
	"status.reconciledRepos[].url string",
	"status.reconciledWorkflow object",
	"status.reconciledWorkflow.appliedAt string format=date-time",
	"status.reconciledWorkflow.branch string",
	"status.reconciledWorkflow.gitUrl string",
	"status.reconciledWorkflow.path string",
	"status.reconciledWorkflow.status string enum=Cloning,Active,Failed",
	"status.sdkRestartCount integer",
	"status.sdkSessionId string",
	"status.startTime string format=date-time",
	"status.stoppedReason string enum=user,inactivity",
}

// TestChartCRDIsOperatorSchema: the chart's CRD (the one kubetest loads and
// the chart installs) declares exactly the operator's fields, types, enums
// and required lists, and nothing else that changes what the API server
// accepts (defaults, bounds, patterns, preserve-unknown-fields, validations).
// A field added to or missing from either side fails here.
func TestChartCRDIsOperatorSchema(t *testing.T) {
	t.Parallel()
	c, err := kubetest.LoadCRD()
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "agenticsessions.vteam.ambient-code" || c.Spec.Group != "vteam.ambient-code" || c.Spec.Scope != apiextensionsv1.NamespaceScoped ||
		c.Spec.Names.Plural != "agenticsessions" || c.Spec.Names.Kind != "AgenticSession" || c.Spec.Names.Singular != "agenticsession" {
		t.Errorf("identity = %s group %s scope %s names %+v", c.Name, c.Spec.Group, c.Spec.Scope, c.Spec.Names)
	}
	if c.Spec.PreserveUnknownFields {
		t.Error("spec.preserveUnknownFields is set")
	}
	if len(c.Spec.Versions) != 1 {
		t.Fatalf("%d versions, want v1alpha1 only", len(c.Spec.Versions))
	}
	v := c.Spec.Versions[0]
	if v.Name != "v1alpha1" || !v.Served || !v.Storage {
		t.Errorf("version %s served=%v storage=%v, want v1alpha1 served and stored", v.Name, v.Served, v.Storage)
	}
	if v.Subresources == nil || v.Subresources.Status == nil || v.Subresources.Scale != nil {
		t.Errorf("subresources = %+v, want status only", v.Subresources)
	}
	if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
		t.Fatal("no schema")
	}
	var got []string
	describe("(root)", *v.Schema.OpenAPIV3Schema, &got)
	slices.Sort(got)
	want := slices.Clone(operatorFields)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("schema of %s differs from the operator's (-operator +chart):\n%s", kubetest.CRDFile, diff)
	}
}

// describe appends one line per schema node: path, type and every keyword
// that changes what the API server accepts.
func describe(path string, p apiextensionsv1.JSONSchemaProps, out *[]string) {
	line := []string{path, p.Type}
	if p.Format != "" {
		line = append(line, "format="+p.Format)
	}
	if len(p.Enum) > 0 {
		var vals []string
		for _, e := range p.Enum {
			vals = append(vals, strings.Trim(string(e.Raw), `"`))
		}
		line = append(line, "enum="+strings.Join(vals, ","))
	}
	if len(p.Required) > 0 {
		line = append(line, "required="+strings.Join(p.Required, ","))
	}
	for name, set := range map[string]bool{
		"default": p.Default != nil, "nullable": p.Nullable, "pattern": p.Pattern != "",
		"bounds":                               p.Minimum != nil || p.Maximum != nil || p.MinLength != nil || p.MaxLength != nil || p.MinItems != nil || p.MaxItems != nil || p.MinProperties != nil || p.MaxProperties != nil,
		"x-kubernetes-preserve-unknown-fields": p.XPreserveUnknownFields != nil,
		"x-kubernetes-embedded-resource":       p.XEmbeddedResource,
		"x-kubernetes-int-or-string":           p.XIntOrString,
		"x-kubernetes-validations":             len(p.XValidations) > 0,
		"x-kubernetes-list-type":               p.XListType != nil || len(p.XListMapKeys) > 0,
		"x-kubernetes-map-type":                p.XMapType != nil,
		"combinators":                          len(p.AllOf)+len(p.AnyOf)+len(p.OneOf) > 0 || p.Not != nil,
	} {
		if set {
			line = append(line, name)
		}
	}
	*out = append(*out, strings.Join(line, " "))
	prefix := path + "."
	if path == "(root)" {
		prefix = ""
	}
	for k, sub := range p.Properties {
		describe(prefix+k, sub, out)
	}
	if p.Items != nil && p.Items.Schema != nil {
		describe(path+"[]", *p.Items.Schema, out)
	}
	if ap := p.AdditionalProperties; ap != nil {
		if ap.Schema != nil {
			describe(path+"{}", *ap.Schema, out)
		} else {
			*out = append(*out, fmt.Sprintf("%s{} allows=%v", path, ap.Allows))
		}
	}
}
