package spec_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
)

// TestOwnerMatchesItsSelectors: what the resync lists with Selectors is
// exactly what Owns accepts, and objects written before instance labels
// belong only to an installation that adopts them.
func TestOwnerMatchesItsSelectors(t *testing.T) {
	t.Parallel()
	managed := func(extra ...string) map[string]string {
		l := map[string]string{spec.LabelManagedBy: spec.ManagedByValue}
		for i := 0; i+1 < len(extra); i += 2 {
			l[extra[i]] = extra[i+1]
		}
		return l
	}
	objects := []struct {
		name   string
		labels map[string]string
		owners []string // installations that own it ("blue+" adopts unlabeled objects)
	}{
		{"blue's", managed(spec.LabelInstance, "blue"), []string{"blue", "blue+"}},
		{"green's", managed(spec.LabelInstance, "green"), []string{"green"}},
		{"written before instance labels", managed(), []string{"blue+"}},
		{"labelled with an empty instance", managed(spec.LabelInstance, ""), nil},
		{"not managed", map[string]string{spec.LabelInstance: "blue"}, nil},
		{"managed by someone else", map[string]string{spec.LabelManagedBy: "helm"}, nil},
	}
	for name, o := range map[string]spec.Owner{
		"blue": {Instance: "blue"}, "blue+": {Instance: "blue", AdoptUnlabeled: true}, "green": {Instance: "green"},
	} {
		var sels []labels.Selector
		for _, s := range o.Selectors() {
			sel, err := labels.Parse(s)
			if err != nil {
				t.Fatalf("selector %q of %s: %v", s, name, err)
			}
			sels = append(sels, sel)
		}
		for _, obj := range objects {
			want := false
			for _, n := range obj.owners {
				want = want || n == name
			}
			if got := o.Owns(obj.labels); got != want {
				t.Errorf("%s owns %s: %v, want %v", name, obj.name, got, want)
			}
			selected := false
			for _, sel := range sels {
				selected = selected || sel.Matches(labels.Set(obj.labels))
			}
			if selected != want {
				t.Errorf("%s's selectors select %s: %v, want %v", name, obj.name, selected, want)
			}
		}
	}
}
