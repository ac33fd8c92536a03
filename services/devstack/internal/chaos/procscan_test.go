package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/procfs"
)

// fakeProc is a procfs in a temporary directory.
type fakeProc struct {
	t    *testing.T
	root string
}

func (f fakeProc) put(pid int, argv []string, env map[string]string, state byte) {
	f.t.Helper()
	f.putProc(pid, argv, env, state, 1, 0, 0)
}

// putProc is put with the parent, the process group and the start time
// (fields 4, 5 and 22 of stat).
func (f fakeProc) putProc(pid int, argv []string, env map[string]string, state byte, ppid, pgrp int, start uint64) {
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
		"stat": fmt.Sprintf("%d (demo (runner) %c %d %d%s %d%s\n", pid, state, ppid, pgrp, strings.Repeat(" 0", 16), start, strings.Repeat(" 0", 30)),
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

// TestStoppedRunnersAreNotLive: a runner in stopped state (T: SIGSTOP, as
// in a frozen node; t: stopped by a tracer) serves nothing and is no live
// runner, so a session whose old runner is stopped beside its new one is
// not run twice; scanStates still finds it (the harness kills what is left
// at the end). Once it runs again it is live, and the sampler records the
// session twice, one episode per set of runners.
func TestStoppedRunnersAreNotLive(t *testing.T) {
	fp := fakeProc{t: t, root: t.TempDir()}
	const exe = "/bin/demo-runner"
	root := "/run/ws"
	env := func(replica, sid string) map[string]string {
		return map[string]string{envSessionID: sid, envWorkspace: root + "/" + replica + "/" + sid}
	}
	fp.put(1, []string{exe}, env("rm-1", "a"), 'T') // frozen with its node
	fp.put(2, []string{exe}, env("rm-1", "b"), 't')
	fp.put(3, []string{exe}, env("rm-0", "a"), 'S') // a's new runner on the peer
	table, err := newProcTable(fp.root, exe, root)
	if err != nil {
		t.Fatal(err)
	}
	live, stopped, err := table.scanStates()
	if err != nil {
		t.Fatal(err)
	}
	wantLive := []runnerProc{{PID: 3, Session: "a", Replica: "rm-0"}}
	wantStopped := []runnerProc{{PID: 1, Session: "a", Replica: "rm-1"}, {PID: 2, Session: "b", Replica: "rm-1"}}
	if !slices.Equal(live, wantLive) || !slices.Equal(stopped, wantStopped) {
		t.Fatalf("scanStates = %+v, %+v; want live %+v, stopped %+v", live, stopped, wantLive, wantStopped)
	}
	s := newSampler(table, 0)
	s.sampleOnce()
	if st := s.Stats(); len(st.Twice) != 0 {
		t.Fatalf("a stopped runner beside a live one counted twice: %+v", st.Twice)
	}
	// The thaw: both of a's runners live for two samples, then a third.
	fp.put(1, []string{exe}, env("rm-1", "a"), 'S')
	s.sampleOnce()
	s.sampleOnce()
	fp.put(4, []string{exe}, env("rm-0", "a"), 'R')
	s.sampleOnce()
	st := s.Stats()
	if len(st.Twice) != 2 || st.Twice[0].Samples != 2 || len(st.Twice[0].Runners) != 2 || st.Twice[1].Samples != 1 || len(st.Twice[1].Runners) != 3 {
		t.Fatalf("twice = %+v, want two episodes of a: 2 samples of 2 runners, then 1 of 3", st.Twice)
	}
}

// TestNodeProcesses: a node freeze stops the replica's runners (those the
// process table attributes to it, running or already stopped, not the
// peer's) and the groups of the replica's children not yet exec'd, never
// the replica's own group (signalled as the member) or init's.
func TestNodeProcesses(t *testing.T) {
	fp := fakeProc{t: t, root: t.TempDir()}
	const exe = "/bin/demo-runner"
	root := "/run/ws"
	env := func(replica, sid string) map[string]string {
		return map[string]string{envSessionID: sid, envWorkspace: root + "/" + replica + "/" + sid}
	}
	const manager = 50
	fp.putProc(manager, []string{"/bin/runner-manager"}, nil, 'T', 1, manager, 500)
	fp.putProc(60, []string{exe}, env("rm-1", "a"), 'S', manager, 60, 600)
	fp.putProc(61, []string{exe}, env("rm-1", "b"), 'T', manager, 61, 610)
	fp.putProc(62, []string{exe}, env("rm-1", "c"), 'S', 1, 62, 620)                 // an orphan of an earlier incarnation
	fp.putProc(70, []string{exe}, env("rm-0", "d"), 'S', 40, 70, 700)                // the peer's
	fp.putProc(80, []string{"/bin/runner-manager"}, nil, 'S', manager, 80, 800)      // forked, own group, not yet exec'd
	fp.putProc(81, []string{"/bin/runner-manager"}, nil, 'S', manager, manager, 810) // forked, still in the replica's group
	fp.putProc(90, []string{exe}, env("rm-1", "z"), 'Z', manager, 90, 900)           // a zombie
	fs, err := procfs.NewFS(fp.root)
	if err != nil {
		t.Fatal(err)
	}
	runners, groups, err := nodeProcesses(fs, exe, root, "rm-1", manager)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, r := range runners {
		pids = append(pids, r.PID)
		if r.PGID != r.PID || r.Start != uint64(r.PID*10) || r.Replica != "rm-1" {
			t.Errorf("runner %+v: want its own group, start %d, on rm-1", r, r.PID*10)
		}
	}
	if want := []int{60, 61, 62}; !slices.Equal(pids, want) {
		t.Errorf("runners %v, want %v", pids, want)
	}
	if want := []int{60, 61, 62, 80}; !slices.Equal(groups, want) {
		t.Errorf("groups %v, want %v", groups, want)
	}
	// present: there, gone, a zombie, another process under its pid.
	a := runners[0]
	if !present(fs, a) {
		t.Errorf("runner %d not present", a.PID)
	}
	fp.putProc(60, []string{exe}, env("rm-1", "a"), 'S', 1, 60, 999)
	if present(fs, a) {
		t.Error("another process under the runner's pid counted as the runner")
	}
	fp.putProc(60, []string{exe}, env("rm-1", "a"), 'Z', manager, 60, 600)
	if present(fs, a) {
		t.Error("a zombie counted as present")
	}
	fp.remove(60)
	if present(fs, a) {
		t.Error("a gone runner counted as present")
	}
}
