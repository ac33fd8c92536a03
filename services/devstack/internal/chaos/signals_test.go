package chaos

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestScanSignalsCountsPerProcess: every phrase is counted per process log,
// a line with two phrases counts for both, and processes without a phrase
// are left out.
func TestScanSignalsCountsPerProcess(t *testing.T) {
	dir := t.TempDir()
	logs := map[string]string{
		"runner-manager-0.log": `{"msg":"event waits for an older event of its object","seq":31}
{"msg":"event handled"}
{"msg":"event waits for an older event of its object","seq":32}
`,
		"kube-reconciler-1.log": `{"msg":"event dead-lettered","err":"event waits for an older event of its object"}
`,
		"informer-0.log": `{"msg":"watch started"}
`,
	}
	for name, text := range logs {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want := []signalCount{
		{Phrase: "event dead-lettered", Process: "kube-reconciler-1", Lines: 1},
		{Phrase: "event waits for an older event of its object", Process: "kube-reconciler-1", Lines: 1},
		{Phrase: "event waits for an older event of its object", Process: "runner-manager-0", Lines: 2},
	}
	if got := scanSignals(dir); !slices.Equal(got, want) {
		t.Errorf("signals = %+v\nwant %+v", got, want)
	}
}
