package chaos

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fakeProc is a procfs in a temporary directory.
type fakeProc struct {
	t    *testing.T
	root string
}

func (f fakeProc) put(pid int, argv []string, env map[string]string, state byte) {
	f.t.Helper()
	dir := filepath.Join(f.root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		f.t.Fatal(err)
	}
	var envs []string
	for k, v := range env {
		envs = append(envs, k+"="+v)
	}
	files := map[string]string{
		"cmdline": strings.Join(argv, "\x00") + "\x00",
		"environ": strings.Join(envs, "\x00") + "\x00",
		// comm with a space and a parenthesis, as the kernel allows; the
		// 52 fields of proc(5), zeros after the state and ppid.
		"stat": strconv.Itoa(pid) + " (demo (runner) " + string(state) + " 1" + strings.Repeat(" 0", 48) + "\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f fakeProc) remove(pid int) {
	f.t.Helper()
	if err := os.RemoveAll(filepath.Join(f.root, strconv.Itoa(pid))); err != nil {
		f.t.Fatal(err)
	}
}

// TestProcTableFindsRunnersOfThisRun: only live runner processes of this
// run count: the runner program with a workspace under the run's root.
// Zombies, other runs' runners and other programs do not; a child seen
// before it exec'd the runner is found once it has.
func TestProcTableFindsRunnersOfThisRun(t *testing.T) {
	fp := fakeProc{t: t, root: t.TempDir()}
	const exe = "/repo/bin/demo-runner"
	root := "/tmp/run/workspaces"
	ws := func(replica, sid string) map[string]string {
		return map[string]string{envSessionID: sid, envWorkspace: filepath.Join(root, replica, sid), "PATH": "/bin"}
	}
	fp.put(10, []string{exe}, ws("runner-manager-0", "s1"), 'S')
	fp.put(11, []string{exe}, ws("runner-manager-1", "s1"), 'R')
	fp.put(12, []string{exe}, ws("runner-manager-1", "s2"), 'Z')                                                                         // zombie: dead
	fp.put(13, []string{exe}, map[string]string{envSessionID: "s3", envWorkspace: "/tmp/other-run/workspaces/runner-manager-0/s3"}, 'S') // another run
	fp.put(14, []string{"/usr/bin/sleep", "60"}, ws("runner-manager-0", "s4"), 'S')                                                      // not the runner program
	fp.put(15, []string{"/repo/bin/runner-manager"}, map[string]string{"LOCAL_WORKSPACE_ROOT": root}, 'S')                               // forked, not yet exec'd
	if err := os.WriteFile(filepath.Join(fp.root, "self"), nil, 0o600); err != nil {                                                     // non-numeric entries are skipped
		t.Fatal(err)
	}
	table, err := newProcTable(fp.root, exe, root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := table.scan()
	if err != nil {
		t.Fatal(err)
	}
	want := []runnerProc{{PID: 10, Session: "s1", Replica: "runner-manager-0"}, {PID: 11, Session: "s1", Replica: "runner-manager-1"}}
	if !slices.Equal(got, want) {
		t.Fatalf("scan = %+v, want %+v", got, want)
	}
	// pid 15 execs the runner; pid 10 exits.
	fp.put(15, []string{exe}, ws("runner-manager-0", "s5"), 'S')
	fp.remove(10)
	got, err = table.scan()
	if err != nil {
		t.Fatal(err)
	}
	want = []runnerProc{{PID: 11, Session: "s1", Replica: "runner-manager-1"}, {PID: 15, Session: "s5", Replica: "runner-manager-0"}}
	if !slices.Equal(got, want) {
		t.Fatalf("second scan = %+v, want %+v", got, want)
	}
}

// TestSamplerRecordsTwice: a session with two live runners in any sample is
// recorded once, with how long it lasted; one runner per session is fine.
func TestSamplerRecordsTwice(t *testing.T) {
	fp := fakeProc{t: t, root: t.TempDir()}
	const exe = "/bin/demo-runner"
	root := "/run/ws"
	env := func(replica, sid string) map[string]string {
		return map[string]string{envSessionID: sid, envWorkspace: root + "/" + replica + "/" + sid}
	}
	fp.put(1, []string{exe}, env("rm-0", "a"), 'S')
	fp.put(2, []string{exe}, env("rm-0", "b"), 'S')
	table, err := newProcTable(fp.root, exe, root)
	if err != nil {
		t.Fatal(err)
	}
	s := newSampler(table, 0)
	s.sampleOnce()
	fp.put(3, []string{exe}, env("rm-1", "a"), 'S')
	s.sampleOnce()
	s.sampleOnce()
	fp.remove(1)
	s.sampleOnce()
	st := s.Stats()
	if st.Samples != 4 || st.Err != nil {
		t.Fatalf("stats %+v, want 4 samples", st)
	}
	if len(st.Twice) != 1 || st.Twice[0].Session != "a" || st.Twice[0].Samples != 2 || len(st.Twice[0].Runners) != 2 {
		t.Fatalf("twice = %+v, want session a in 2 samples with 2 runners", st.Twice)
	}
	latest, _ := s.Latest()
	if len(latest["a"]) != 1 || latest["a"][0].PID != 3 || len(latest["b"]) != 1 {
		t.Fatalf("latest = %+v, want a on pid 3 and b", latest)
	}
}
