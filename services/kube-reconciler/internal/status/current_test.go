package status

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestCurrentCR: only the CR the event path applies for the session as it
// is now (its project's namespace, its CR name) carries status to the API;
// the CR a session left behind (moved project, renamed kube_cr_name) does
// not, nor does any CR of a session that can have none. The trimmed copy
// the write-back remembers decides the same as the whole session.
func TestCurrentCR(t *testing.T) {
	t.Parallel()
	c := &Controller{cfg: Config{DefaultNamespace: "ambient-code"}}
	sess := func(project, crName string) *ambientv1.Session {
		s := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "S1"}, Name: "n", Prompt: proto.String("p")}
		if project != "" {
			s.ProjectId = proto.String(project)
		}
		if crName != "" {
			s.KubeCrName = proto.String(crName)
		}
		return s
	}
	tests := []struct {
		name    string
		s       *ambientv1.Session
		ns, cr  string
		current bool
	}{
		{"its project's namespace", sess("Team", "S1"), "team", "s1", true},
		{"no project: the default namespace", sess("", "S1"), "ambient-code", "s1", true},
		{"no kube_cr_name: the id", sess("team", ""), "team", "s1", true},
		{"moved to another project", sess("other", "S1"), "team", "s1", false},
		{"moved out of every project", sess("", "S1"), "team", "s1", false},
		{"kube_cr_name changed", sess("team", "renamed"), "team", "s1", false},
		{"invalid project: no CR is current", sess("no/such", "S1"), "team", "s1", false},
		{"invalid CR name: no CR is current", sess("team", "Not_Valid"), "team", "not_valid", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cr := &unstructured.Unstructured{}
			cr.SetNamespace(tc.ns)
			cr.SetName(tc.cr)
			if got := c.current(tc.s, cr); got != tc.current {
				t.Errorf("current(%s/%s) = %v, want %v", tc.ns, tc.cr, got, tc.current)
			}
			if got := c.current(trim(tc.s), cr); got != tc.current {
				t.Errorf("current(trimmed, %s/%s) = %v, want %v", tc.ns, tc.cr, got, tc.current)
			}
		})
	}
}

// oneSession is an API holding one session.
type oneSession struct{ s *ambientv1.Session }

func (o oneSession) GetSession(context.Context, string) (*ambientv1.Session, error) { return o.s, nil }

func (o oneSession) UpdateSessionStatus(context.Context, *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	return nil, errors.New("unexpected write")
}

// TestOfCurrent: a CR being deleted carries nothing; a CR that is not the
// current one by the session as last seen is judged again on the session
// the API has now, since last seen may be behind (a session moved back to
// its old project): only then is it left alone.
func TestOfCurrent(t *testing.T) {
	t.Parallel()
	at := func(project string) *ambientv1.Session {
		return &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "S1"}, ProjectId: proto.String(project)}
	}
	tests := []struct {
		name      string
		last, api *ambientv1.Session
		deleting  bool
		want      string // project of the session returned, "" for not current
	}{
		{"current by last seen", at("team"), at("other"), false, "team"},
		{"nothing seen yet: sync's fresh read decides", nil, at("other"), false, "-"},
		{"moved away", at("other"), at("other"), false, ""},
		{"last seen behind a move back", at("other"), at("team"), false, "team"},
		{"being deleted", at("team"), at("team"), true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			seen, err := lru.New[string, *ambientv1.Session](4)
			if err != nil {
				t.Fatal(err)
			}
			c := &Controller{cfg: Config{API: oneSession{tc.api}, DefaultNamespace: "ambient-code", Log: slog.New(slog.DiscardHandler)}, seen: seen}
			cr := &unstructured.Unstructured{}
			cr.SetNamespace("team")
			cr.SetName("s1")
			cr.SetAnnotations(map[string]string{spec.AnnotationSessionID: "S1"})
			if tc.deleting {
				cr.SetDeletionTimestamp(&metav1.Time{Time: time.Now()})
			}
			got, ok, err := c.ofCurrent(t.Context(), "team/s1", cr, tc.last)
			if err != nil {
				t.Fatal(err)
			}
			project := ""
			switch {
			case ok && got == nil:
				project = "-"
			case ok:
				project = got.GetProjectId()
			}
			if project != tc.want {
				t.Errorf("ofCurrent = session of project %q (ok %v), want %q", project, ok, tc.want)
			}
		})
	}
}
