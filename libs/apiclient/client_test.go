package apiclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recv receives one event or fails after timeout.
func recv[E any](t testing.TB, st grpc.ServerStreamingClient[E], timeout time.Duration) (*E, error) {
	t.Helper()
	type res struct {
		ev  *E
		err error
	}
	ch := make(chan res, 1) // one result; the goroutine ends when the stream does
	go func() {
		ev, err := st.Recv()
		ch <- res{ev, err}
	}()
	select {
	case r := <-ch:
		return r.ev, r.err
	case <-time.After(timeout):
		t.Fatalf("no event within %v", timeout)
		return nil, nil
	}
}

func waitWatchers(t testing.TB, srv *memapi.Server, n int) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() error {
		if got := srv.Watchers(); got != n {
			return fmt.Errorf("%d watchers, want %d", got, n)
		}
		return nil
	})
}

func TestListSessionsAcrossPages(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	want := make([]string, 0, 1250)
	for i := range 1250 {
		s, err := srv.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprint("s", i)})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, s.GetMetadata().GetId())
	}
	c := testenv.APIClient(t, srv)
	list := func(size int32) func(context.Context) ([]*ambientv1.Session, error) {
		return func(ctx context.Context) ([]*ambientv1.Session, error) {
			return apiclient.ListAll(ctx, size, func(ctx context.Context, page, size int32) (*ambientv1.ListSessionsResponse, error) {
				return c.Sessions().ListSessions(ctx, &ambientv1.ListSessionsRequest{Page: page, Size: size})
			})
		}
	}
	tests := []struct {
		name      string
		list      func(context.Context) ([]*ambientv1.Session, error)
		wantCalls int
	}{
		{"ListSessions uses size 500", c.ListSessions, 3},
		{"size 1000 is clamped to 20 by the server", list(1000), 63},
		{"size 500", list(500), 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.CallCount(ambientv1.SessionService_ListSessions_FullMethodName)
			got, err := tc.list(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			ids := make([]string, 0, len(got))
			for _, s := range got {
				ids = append(ids, s.GetMetadata().GetId())
			}
			if diff := cmp.Diff(want, ids); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
			if calls := srv.CallCount(ambientv1.SessionService_ListSessions_FullMethodName) - before; calls != tc.wantCalls {
				t.Errorf("%d list calls, want %d", calls, tc.wantCalls)
			}
		})
	}
}

// TestListLargePages lists pages bigger than grpc's 4 MiB default limit.
func TestListLargePages(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	prompt := strings.Repeat("p", 16<<10)
	for i := range 300 { // 4.8 MiB in one page
		if _, err := srv.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprint(i), Prompt: proto.String(prompt)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := testenv.APIClient(t, srv).ListSessions(t.Context())
	if err != nil || len(got) != 300 {
		t.Fatalf("got %d sessions, err %v", len(got), err)
	}
}

func TestListProjectsAndSettings(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	c := testenv.APIClient(t, srv)
	ctx := t.Context()
	for i := range 3 {
		if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: fmt.Sprint("p", i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: fmt.Sprint("p", i)}); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := c.ListProjects(ctx)
	if err != nil || len(ps) != 3 || ps[2].GetName() != "p2" {
		t.Fatalf("ListProjects: %v, %v", ps, err)
	}
	pss, err := c.ListProjectSettings(ctx)
	if err != nil || len(pss) != 3 || pss[0].GetProjectId() != "p0" {
		t.Fatalf("ListProjectSettings: %v, %v", pss, err)
	}
	empty, err := c.ListSessions(ctx)
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty ListSessions: %v, %v", empty, err)
	}
}

// TestListAllStopConditions drives ListAll with scripted pages.
func TestListAllStopConditions(t *testing.T) {
	t.Parallel()
	p := func(total int32, ids ...string) *ambientv1.ListProjectsResponse {
		r := &ambientv1.ListProjectsResponse{Metadata: &ambientv1.ListMeta{Size: int32(len(ids)), Total: total}}
		for _, id := range ids {
			r.Items = append(r.Items, &ambientv1.Project{Metadata: &ambientv1.ObjectReference{Id: id}, Name: id})
		}
		return r
	}
	errBoom := status.Error(codes.Unavailable, "boom")
	tests := []struct {
		name      string
		pages     []*ambientv1.ListProjectsResponse
		failAt    int // 1-based page that fails; 0 none
		want      []string
		wantCalls int
	}{
		{"stops at total", []*ambientv1.ListProjectsResponse{p(3, "a", "b"), p(3, "c")}, 0, []string{"a", "b", "c"}, 2},
		{"stops at an empty page when total lies", []*ambientv1.ListProjectsResponse{p(9, "a"), p(9, "b"), p(9)}, 0, []string{"a", "b"}, 3},
		{"empty first page", []*ambientv1.ListProjectsResponse{p(0)}, 0, nil, 1},
		{"a duplicate between pages keeps one copy", []*ambientv1.ListProjectsResponse{p(3, "a", "b"), p(3, "b", "c")}, 0, []string{"a", "b", "c"}, 2},
		{"error names the page", []*ambientv1.ListProjectsResponse{p(3, "a")}, 2, nil, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			calls := 0
			got, err := apiclient.ListAll(t.Context(), 2, func(_ context.Context, page, size int32) (*ambientv1.ListProjectsResponse, error) {
				calls++
				if page != int32(calls) || size != 2 {
					t.Errorf("call %d asked page %d size %d", calls, page, size)
				}
				if int(page) == tc.failAt {
					return nil, errBoom
				}
				if int(page) > len(tc.pages) {
					return p(0), nil
				}
				return tc.pages[page-1], nil
			})
			if tc.failAt != 0 {
				if status.Code(err) != codes.Unavailable || err.Error() != "list page 2: rpc error: code = Unavailable desc = boom" {
					t.Errorf("err = %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, it := range got {
				ids = append(ids, it.GetMetadata().GetId())
			}
			if diff := cmp.Diff(tc.want, ids); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
			if calls != tc.wantCalls {
				t.Errorf("%d calls, want %d", calls, tc.wantCalls)
			}
		})
	}
}

// TestListLaterCopyWins updates a project between two pages: memapi, like
// the real server, moves it to the end of the list order, so the second page
// shows it again. The later copy (the update) wins and keeps its first
// position.
func TestListLaterCopyWins(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	c := testenv.APIClient(t, srv, func(cfg *apiclient.Config) { cfg.PageSize = 2 })
	for _, name := range []string{"pa", "pb", "pc", "pd"} {
		if _, err := c.CreateProject(t.Context(), &ambientv1.CreateProjectRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	var once sync.Once
	updated := make(chan error, 1) // the hook's one update
	srv.SetListHook(func(method string, page int32) {
		if method != ambientv1.ProjectService_ListProjects_FullMethodName || page != 1 {
			return
		}
		once.Do(func() {
			// After page 1 (pa, pb): the order becomes pb, pc, pd, pa.
			_, err := srv.Projects().UpdateProject(t.Context(), &ambientv1.UpdateProjectRequest{Id: "pa", Description: proto.String("moved")})
			updated <- err
		})
	})
	got, err := c.ListProjects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-updated:
		if err != nil {
			t.Fatalf("update in the list hook: %v", err)
		}
	default:
		t.Fatal("the list hook did not update pa")
	}
	ids := make([]string, 0, len(got))
	for _, p := range got {
		ids = append(ids, p.GetMetadata().GetId())
	}
	// Page 2 is offset 2 of the new order: pd, pa. pc moved into page 1's
	// range and is skipped, as on the real server.
	if diff := cmp.Diff([]string{"pa", "pb", "pd"}, ids); diff != "" {
		t.Fatalf("ids (-want +got):\n%s", diff)
	}
	if d := got[0].GetDescription(); d != "moved" {
		t.Errorf("pa has description %q, want the later copy's %q", d, "moved")
	}
}

func TestWatchSeesChangesFromAnotherClient(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	watcher := testenv.APIClient(t, srv)
	writer := testenv.APIClient(t, srv)
	ctx := t.Context()
	ws, err := watcher.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wp, err := watcher.WatchProjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wps, err := watcher.WatchProjectSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitWatchers(t, srv, 3)

	// Wait for each event before the next change: an object changed again
	// before its event is sent shows only the later state.
	s, err := writer.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	ev, err := recv(t, ws, 5*time.Second)
	if err != nil || ev.GetType() != ambientv1.EventType_EVENT_TYPE_CREATED || ev.GetSession().GetName() != "a" || ev.GetResourceId() != id {
		t.Fatalf("CREATED: %v, %v", ev, err)
	}
	if _, err := writer.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Running")}); err != nil {
		t.Fatal(err)
	}
	ev, err = recv(t, ws, 5*time.Second)
	if err != nil || ev.GetType() != ambientv1.EventType_EVENT_TYPE_UPDATED || ev.GetSession().GetPhase() != "Running" {
		t.Fatalf("UPDATED: %v, %v", ev, err)
	}
	if err := writer.DeleteSession(ctx, id); err != nil {
		t.Fatal(err)
	}
	ev, err = recv(t, ws, 5*time.Second)
	if err != nil || ev.GetType() != ambientv1.EventType_EVENT_TYPE_DELETED || ev.GetResourceId() != id || ev.GetSession() != nil {
		t.Fatalf("DELETED: %v, %v", ev, err)
	}

	if _, err := writer.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "p1"}); err != nil {
		t.Fatal(err)
	}
	if ev, err := recv(t, wp, 5*time.Second); err != nil || ev.GetProject().GetName() != "p1" {
		t.Fatalf("project CREATED: %v, %v", ev, err)
	}
	settings, err := writer.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: settings.GetMetadata().GetId(), Repositories: proto.String("[]")}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []ambientv1.EventType{ambientv1.EventType_EVENT_TYPE_CREATED, ambientv1.EventType_EVENT_TYPE_UPDATED} {
		if ev, err := recv(t, wps, 5*time.Second); err != nil || ev.GetType() != want || ev.GetProjectSettings().GetProjectId() != "p1" {
			t.Fatalf("settings %v: %v, %v", want, ev, err)
		}
	}
}

// TestWatchDoesNotBlockOnHeaders proves that Watch returns before any event
// exists: the server sends no headers until the first event.
func TestWatchDoesNotBlockOnHeaders(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	c := testenv.APIClient(t, srv)
	tests := []struct {
		name  string
		watch func(ctx context.Context) (grpc.ClientStream, error)
	}{
		{"sessions", func(ctx context.Context) (grpc.ClientStream, error) {
			st, err := c.WatchSessions(ctx)
			return st, err
		}},
		{"projects", func(ctx context.Context) (grpc.ClientStream, error) {
			st, err := c.WatchProjects(ctx)
			return st, err
		}},
		{"project_settings", func(ctx context.Context) (grpc.ClientStream, error) {
			st, err := c.WatchProjectSettings(ctx)
			return st, err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			type res struct {
				st  grpc.ClientStream
				err error
			}
			done := make(chan res, 1) // one result
			begin := time.Now()
			go func() {
				st, err := tc.watch(ctx)
				done <- res{st, err}
			}()
			var r res
			select {
			case r = <-done:
			case <-time.After(10 * time.Second): // a blocked Watch waits for an event that never comes
				t.Fatal("Watch blocked for 10s with no events")
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			t.Logf("Watch returned after %v", time.Since(begin))
			// And the server really sent no headers yet.
			hdr := make(chan struct{}) // closed when Header returns
			go func() {
				_, _ = r.st.Header() // returns when headers arrive or the stream ends (cancel below)
				close(hdr)
			}()
			select {
			case <-hdr:
				t.Fatal("headers arrived before any event")
			case <-time.After(100 * time.Millisecond): // negative check
			}
			cancel()
			<-hdr
		})
	}
}

func TestUnauthenticated(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	tests := []struct {
		name  string
		token string
	}{
		{"missing token", ""},
		{"wrong token", "not-" + testenv.APIToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := testenv.APIClient(t, srv, func(cfg *apiclient.Config) { cfg.Token = tc.token })
			if _, err := c.GetSession(t.Context(), "x"); status.Code(err) != codes.Unauthenticated {
				t.Errorf("unary: %v, want Unauthenticated", err)
			}
			if _, err := c.ListProjects(t.Context()); status.Code(err) != codes.Unauthenticated {
				t.Errorf("list: %v, want Unauthenticated", err)
			}
			for _, call := range crudCalls(c) {
				if err := call.do(t.Context()); status.Code(err) != codes.Unauthenticated {
					t.Errorf("%s: %v, want Unauthenticated", call.name, err)
				}
			}
			w, err := c.WatchSessions(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := recv(t, w, 5*time.Second); status.Code(err) != codes.Unauthenticated {
				t.Errorf("watch: %v, want Unauthenticated", err)
			}
		})
	}
}

func TestUpdateSessionStatus(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	c := testenv.APIClient(t, srv)
	s, err := c.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	tests := []struct {
		name  string
		phase string
		want  codes.Code
	}{
		{"valid", "Creating", codes.OK},
		{"invalid", "Sleeping", codes.InvalidArgument},
		{"empty", "", codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String(tc.phase)})
			if status.Code(err) != tc.want {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if tc.want == codes.OK && got.GetPhase() != tc.phase {
				t.Errorf("phase %q, want %q", got.GetPhase(), tc.phase)
			}
		})
	}
}

func TestEndWatchesGivesEOF(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	c := testenv.APIClient(t, srv)
	w, err := c.WatchSessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitWatchers(t, srv, 1)
	srv.EndWatches()
	if _, err := recv(t, w, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv: %v, want io.EOF", err)
	}
}

func TestDefaultTimeout(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	release := make(chan struct{})
	// The hook holds the list until the test ends, but at most 5 s: should
	// the default timeout not apply, the call then succeeds and the test
	// fails instead of hanging. So DeadlineExceeded alone proves the 100ms
	// Timeout cut the call: the only other deadline, DefaultTimeout (30 s),
	// ends after the hook. No wall-clock bound: load only delays the error.
	srv.SetListHook(func(string, int32) {
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
	})
	defer close(release)
	c := testenv.APIClient(t, srv, func(cfg *apiclient.Config) { cfg.Timeout = 100 * time.Millisecond })
	begin := time.Now()
	_, err := c.ListSessions(t.Context()) // no deadline: the client's default applies
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err %v after %v, want DeadlineExceeded after Timeout (100ms)", err, time.Since(begin))
	}
}

// TestDefaultTimeoutKeepsCallerDeadline: the default timeout only bounds
// calls without a deadline; it never shortens the caller's own.
func TestDefaultTimeoutKeepsCallerDeadline(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	// A slow server: every list answers after 300 ms, longer than Timeout.
	srv.SetListHook(func(string, int32) { <-time.After(300 * time.Millisecond) })
	c := testenv.APIClient(t, srv, func(cfg *apiclient.Config) { cfg.Timeout = 100 * time.Millisecond })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := c.ListSessions(ctx); err != nil {
		t.Fatalf("ListSessions with a 5s ctx, Timeout 100ms and a 300ms server: %v, want success", err)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(notPEM, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  apiclient.Config
	}{
		{"empty addr", apiclient.Config{}},
		{"negative keepalive", apiclient.Config{Addr: "x:1", Keepalive: -1}},
		{"negative timeout", apiclient.Config{Addr: "x:1", Timeout: -1}},
		{"negative page size", apiclient.Config{Addr: "x:1", PageSize: -1}},
		{"page size too big", apiclient.Config{Addr: "x:1", PageSize: 501}},
		{"missing CA file", apiclient.Config{Addr: "x:1", UseTLS: true, CAFile: filepath.Join(dir, "none.pem")}},
		{"CA file without PEM", apiclient.Config{Addr: "x:1", UseTLS: true, CAFile: notPEM}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := apiclient.New(tc.cfg)
			if !errors.Is(err, apiclient.ErrInvalidConfig) {
				t.Errorf("err %v, want ErrInvalidConfig", err)
			}
			if c != nil {
				if err := c.Close(); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestTLSWithCAFile(t *testing.T) {
	t.Parallel()
	caFile, serverCert := selfSigned(t)
	srv, err := memapi.New(memapi.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	gs := srv.NewGRPCServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12})))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1) // one result
	go func() { served <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	c, err := apiclient.New(apiclient.Config{Addr: lis.Addr().String(), Token: "tok", UseTLS: true, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}()
	if _, err := c.CreateProject(t.Context(), &ambientv1.CreateProjectRequest{Name: "p1"}); err != nil {
		t.Fatalf("call over TLS: %v", err)
	}
	// Without the CA the server is not trusted.
	plain, err := apiclient.New(apiclient.Config{Addr: lis.Addr().String(), Token: "tok", UseTLS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := plain.Close(); err != nil {
			t.Error(err)
		}
	}()
	if _, err := plain.GetProject(t.Context(), "p"); status.Code(err) != codes.Unavailable {
		t.Errorf("untrusted server: %v, want Unavailable", err)
	}
}

// selfSigned writes a self-signed CA certificate for 127.0.0.1 and returns
// its file and the matching server certificate.
func selfSigned(t *testing.T) (string, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "memapi test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return file, pair
}

func TestConfigLogValueRedactsToken(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	log := slog.New(slog.NewJSONHandler(&b, nil))
	log.Info("cfg", slog.Any("api", apiclient.Config{Addr: "a:1", Token: "hunter2"}))
	if strings.Contains(b.String(), "hunter2") || !strings.Contains(b.String(), "a:1") {
		t.Errorf("log line %s", b.String())
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	// The health service needs no token.
	c := testenv.APIClient(t, srv, func(cfg *apiclient.Config) { cfg.Token = "" })
	if err := c.Check(t.Context()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	down := testenv.APIClient(t, srv, func(cfg *apiclient.Config) { cfg.Addr = addr })
	if err := down.Check(t.Context()); status.Code(err) != codes.Unavailable {
		t.Fatalf("Check of a closed port: %v, want Unavailable", err)
	}
}
