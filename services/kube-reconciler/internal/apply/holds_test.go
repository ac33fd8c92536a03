package apply

import "testing"

// TestHolds: a cached object holds the apply body when every field of the
// body has the same value in it; more fields (status, defaults, others'
// labels) do not matter, a changed or missing one does, and lists compare
// element by element.
func TestHolds(t *testing.T) {
	t.Parallel()
	body := map[string]any{"spec": map[string]any{"initialPrompt": "p", "timeout": int64(300), "repos": []any{map[string]any{"url": "u"}}},
		"metadata": map[string]any{"labels": map[string]any{"a": "1"}}}
	tests := []struct {
		name string
		have map[string]any
		want bool
	}{
		{"same", map[string]any{"spec": map[string]any{"initialPrompt": "p", "timeout": int64(300), "repos": []any{map[string]any{"url": "u"}}},
			"metadata": map[string]any{"labels": map[string]any{"a": "1"}}}, true},
		{"more fields", map[string]any{"spec": map[string]any{"initialPrompt": "p", "timeout": int64(300), "repos": []any{map[string]any{"url": "u", "branch": "main"}}, "x": true},
			"metadata": map[string]any{"labels": map[string]any{"a": "1", "b": "2"}}, "status": map[string]any{"phase": "Running"}}, true},
		{"changed value", map[string]any{"spec": map[string]any{"initialPrompt": "other", "timeout": int64(300), "repos": []any{map[string]any{"url": "u"}}},
			"metadata": map[string]any{"labels": map[string]any{"a": "1"}}}, false},
		{"number type", map[string]any{"spec": map[string]any{"initialPrompt": "p", "timeout": float64(300), "repos": []any{map[string]any{"url": "u"}}},
			"metadata": map[string]any{"labels": map[string]any{"a": "1"}}}, false},
		{"missing label", map[string]any{"spec": map[string]any{"initialPrompt": "p", "timeout": int64(300), "repos": []any{map[string]any{"url": "u"}}},
			"metadata": map[string]any{}}, false},
		{"longer list", map[string]any{"spec": map[string]any{"initialPrompt": "p", "timeout": int64(300), "repos": []any{map[string]any{"url": "u"}, map[string]any{"url": "v"}}},
			"metadata": map[string]any{"labels": map[string]any{"a": "1"}}}, false},
		{"not a map", map[string]any{"spec": "p", "metadata": map[string]any{"labels": map[string]any{"a": "1"}}}, false},
	}
	for _, tc := range tests {
		if got := holds(tc.have, body); got != tc.want {
			t.Errorf("%s: holds = %v, want %v", tc.name, got, tc.want)
		}
	}
}
