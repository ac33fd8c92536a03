package memapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

func TestPaginationClamps(t *testing.T) {
	t.Parallel()
	srv := start(t)
	seedSessions(t, srv, 1250)
	c := client(t, srv, testToken)
	tests := []struct {
		name               string
		page, size         int32
		wantPage, wantSize int32
		wantFirst          string
	}{
		{name: "first page of 500", page: 1, size: 500, wantPage: 1, wantSize: 500, wantFirst: "s-00000"},
		{name: "last partial page", page: 3, size: 500, wantPage: 3, wantSize: 250, wantFirst: "s-01000"},
		{name: "page 0 becomes 1", page: 0, size: 10, wantPage: 1, wantSize: 10, wantFirst: "s-00000"},
		{name: "negative page becomes 1", page: -4, size: 10, wantPage: 1, wantSize: 10, wantFirst: "s-00000"},
		{name: "size 0 becomes 20", page: 2, size: 0, wantPage: 2, wantSize: 20, wantFirst: "s-00020"},
		{name: "size 501 becomes 20", page: 1, size: 501, wantPage: 1, wantSize: 20, wantFirst: "s-00000"},
		{name: "size 1000 becomes 20", page: 3, size: 1000, wantPage: 3, wantSize: 20, wantFirst: "s-00040"},
		{name: "beyond the end is empty", page: 4, size: 500, wantPage: 4, wantSize: 0},
		{name: "huge page does not overflow", page: 1 << 30, size: 500, wantPage: 1 << 30, wantSize: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Sessions().ListSessions(t.Context(), &ambientv1.ListSessionsRequest{Page: tc.page, Size: tc.size})
			if err != nil {
				t.Fatal(err)
			}
			want := &ambientv1.ListMeta{Page: tc.wantPage, Size: tc.wantSize, Total: 1250}
			if diff := cmp.Diff(want, resp.GetMetadata(), protocmp.Transform()); diff != "" {
				t.Errorf("metadata (-want +got):\n%s", diff)
			}
			if got := int32(len(resp.GetItems())); got != tc.wantSize {
				t.Errorf("items = %d, want %d", got, tc.wantSize)
			}
			if tc.wantFirst != "" && resp.GetItems()[0].GetName() != tc.wantFirst {
				t.Errorf("first item = %s, want %s", resp.GetItems()[0].GetName(), tc.wantFirst)
			}
		})
	}
}

func TestListOrderSurvivesDeletes(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ss := seedSessions(t, srv, 10)
	for _, i := range []int{0, 3, 9} {
		if _, err := srv.Sessions().DeleteSession(t.Context(), &ambientv1.DeleteSessionRequest{Id: ss[i].GetMetadata().GetId()}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := srv.Sessions().ListSessions(t.Context(), &ambientv1.ListSessionsRequest{Size: 100})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range resp.GetItems() {
		got = append(got, s.GetName())
	}
	want := []string{"s-00001", "s-00002", "s-00004", "s-00005", "s-00006", "s-00007", "s-00008"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	if resp.GetMetadata().GetTotal() != 7 {
		t.Errorf("total = %d, want 7", resp.GetMetadata().GetTotal())
	}
}

func TestCreateDefaultsAndIDs(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx := t.Context()

	s, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "a", Prompt: proto.String("hi"), ProjectId: proto.String("no-such-project")})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	if len(id) != 27 {
		t.Errorf("id %q: want 27 characters", id)
	}
	want := &ambientv1.Session{
		Name: "a", Prompt: proto.String("hi"), ProjectId: proto.String("no-such-project"),
		LlmModel: proto.String("sonnet"), LlmTemperature: proto.Float64(0.7), LlmMaxTokens: proto.Int32(4000),
		KubeCrName: proto.String(id),
	}
	if diff := cmp.Diff(want, s, protocmp.Transform(), protocmp.IgnoreFields(&ambientv1.Session{}, "metadata")); diff != "" {
		t.Errorf("session (-want +got):\n%s", diff)
	}
	if m := s.GetMetadata(); m.GetKind() != "Session" || m.GetHref() != "/api/ambient/v1/sessions/"+id || m.GetCreatedAt() == nil || m.GetUpdatedAt() == nil {
		t.Errorf("metadata = %v", m)
	}

	// Explicit values are kept.
	s2, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "b", LlmModel: proto.String("opus"), LlmTemperature: proto.Float64(0), LlmMaxTokens: proto.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if s2.GetLlmModel() != "opus" || s2.LlmTemperature == nil || s2.GetLlmTemperature() != 0 || s2.GetLlmMaxTokens() != 1 {
		t.Errorf("explicit llm settings not kept: %v", s2)
	}

	// An empty model is filled like a missing one (upstream's BeforeCreate).
	s3, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "c", LlmModel: proto.String("")})
	if err != nil {
		t.Fatal(err)
	}
	if s3.GetLlmModel() != memapi.DefaultLLMModel {
		t.Errorf("llm_model %q for an empty one, want %q", s3.GetLlmModel(), memapi.DefaultLLMModel)
	}

	p, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "proj", DisplayName: proto.String("Proj")})
	if err != nil {
		t.Fatal(err)
	}
	if p.GetMetadata().GetId() != "proj" {
		t.Errorf("project id = %q, want its name", p.GetMetadata().GetId())
	}
	_, err = c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "proj"})
	if got := status.Code(err); got != codes.AlreadyExists {
		t.Errorf("duplicate project: code %v, want AlreadyExists (err %v)", got, err)
	}

	tests := []struct {
		name string
		call func() error
	}{
		{"session without name", func() error {
			_, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{})
			return err
		}},
		{"project without name", func() error {
			_, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{})
			return err
		}},
		{"settings without project", func() error {
			_, err := c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{})
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != codes.InvalidArgument {
				t.Errorf("code %v, want InvalidArgument", got)
			}
		})
	}
}

func TestUpdatesSetOnlyPresentFields(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx := t.Context()
	s, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "a", Prompt: proto.String("p"), RepoUrl: proto.String("r")})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	u, err := c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, Prompt: proto.String("p2")})
	if err != nil {
		t.Fatal(err)
	}
	if u.GetPrompt() != "p2" || u.GetRepoUrl() != "r" || u.GetName() != "a" {
		t.Errorf("update: %v", u)
	}
	if !u.GetMetadata().GetUpdatedAt().AsTime().After(s.GetMetadata().GetUpdatedAt().AsTime()) &&
		!u.GetMetadata().GetUpdatedAt().AsTime().Equal(s.GetMetadata().GetUpdatedAt().AsTime()) {
		t.Errorf("updated_at went backwards")
	}
	// The update answers with created_at as the database holds it
	// (microseconds), the create with the time it set (nanoseconds).
	if u.GetMetadata().GetId() != id || !u.GetMetadata().GetCreatedAt().AsTime().Equal(s.GetMetadata().GetCreatedAt().AsTime().Truncate(time.Microsecond)) {
		t.Errorf("metadata changed: %v -> %v", s.GetMetadata(), u.GetMetadata())
	}

	start := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	st, err := c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Running"), StartTime: start, KubeNamespace: proto.String("ns")})
	if err != nil {
		t.Fatal(err)
	}
	st2, err := c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, SdkRestartCount: proto.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	if st2.GetPhase() != "Running" || !proto.Equal(st2.GetStartTime(), start) || st2.GetKubeNamespace() != "ns" || st2.GetSdkRestartCount() != 2 || st2.GetPrompt() != "p2" {
		t.Errorf("status update lost fields: %v (after %v)", st2, st)
	}

	// The real service's checks, in its order (read from its code): no
	// status field at all, then the id, then the phase.
	const (
		badPhase = `invalid phase "Exploded"; must be one of: Pending, Creating, Running, Stopping, Stopped, Completed, Failed`
		noField  = "status patch body must set at least one field: phase, start_time, completion_time, sdk_session_id, " +
			"sdk_restart_count, conditions, reconciled_repos, reconciled_workflow, kube_cr_uid, kube_namespace"
	)
	tests := []struct {
		name   string
		req    *ambientv1.UpdateSessionStatusRequest
		want   codes.Code
		reason string // "": not compared
	}{
		{"invalid phase", &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Exploded")}, codes.InvalidArgument, badPhase},
		{"empty phase", &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("")}, codes.InvalidArgument, ""},
		{"lower-case phase", &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("running")}, codes.InvalidArgument, ""},
		{"unknown id", &ambientv1.UpdateSessionStatusRequest{Id: "nope", Phase: proto.String("Failed")}, codes.NotFound, ""},
		{"unknown id, invalid phase", &ambientv1.UpdateSessionStatusRequest{Id: "nope", Phase: proto.String("Exploded")}, codes.NotFound, ""},
		{"no status field", &ambientv1.UpdateSessionStatusRequest{Id: id}, codes.InvalidArgument, noField},
		{"no status field, unknown id", &ambientv1.UpdateSessionStatusRequest{Id: "nope"}, codes.InvalidArgument, noField},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Sessions().UpdateSessionStatus(ctx, tc.req) // the generated client: the message is compared whole
			st := status.Convert(err)
			if st.Code() != tc.want || tc.reason != "" && st.Message() != tc.reason {
				t.Errorf("got %v %q, want %v %q", st.Code(), st.Message(), tc.want, tc.reason)
			}
		})
	}
	for _, ph := range session.Phases() {
		if _, err := c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: ph.Ptr()}); err != nil {
			t.Errorf("phase %s: %v", ph, err)
		}
	}
	if _, err := c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("update unknown: %v, want NotFound", err)
	}
	if _, err := c.GetSession(ctx, "nope"); status.Code(err) != codes.NotFound {
		t.Errorf("get unknown: %v, want NotFound", err)
	}
}

// TestTimestampPrecision: every timestamp read back from the database
// (watch events, get, list) has microsecond precision, the status times a
// client sets included; responses to mutations carry nanoseconds where the
// mutation set the time (a create's, an update's updated_at and fields).
func TestTimestampPrecision(t *testing.T) {
	t.Parallel()
	clock := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
	srv := start(t, memapi.WithClock(func() time.Time { return clock }))
	c := client(t, srv, testToken)
	ctx := t.Context()
	s, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.GetMetadata().GetCreatedAt().GetNanos(); got != 123456789 {
		t.Errorf("mutation response nanos = %d, want 123456789", got)
	}
	id := s.GetMetadata().GetId()
	st, err := c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{
		Id: id, StartTime: timestamppb.New(clock), CompletionTime: timestamppb.New(clock.Add(time.Hour)),
	})
	if err != nil {
		t.Fatal(err)
	}
	// An update answers with the row as read (created_at in
	// microseconds), changed by the request (its times as sent) and
	// updated_at set now: the real server reads the row before it writes.
	for field, want := range map[string]int32{
		"created_at": 123456000, "updated_at": 123456789, "start_time": 123456789, "completion_time": 123456789,
	} {
		ts := map[string]*timestamppb.Timestamp{"created_at": st.GetMetadata().GetCreatedAt(), "updated_at": st.GetMetadata().GetUpdatedAt(),
			"start_time": st.GetStartTime(), "completion_time": st.GetCompletionTime()}[field]
		if ts.GetNanos() != want {
			t.Errorf("update response: %s nanos = %d, want %d", field, ts.GetNanos(), want)
		}
	}
	w, err := c.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)
	if _, err := c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, Prompt: proto.String("watched")}); err != nil {
		t.Fatal(err)
	}
	ev, err := recv(t, w, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.ListSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, read := range map[string]*ambientv1.Session{"watch": ev.GetSession(), "get": got, "list": list[0]} {
		m := read.GetMetadata()
		times := map[string]*timestamppb.Timestamp{
			"created_at": m.GetCreatedAt(), "updated_at": m.GetUpdatedAt(),
			"start_time": read.GetStartTime(), "completion_time": read.GetCompletionTime(),
		}
		for field, ts := range times {
			if ts.GetNanos() != 123456000 {
				t.Errorf("%s: %s nanos = %d, want 123456000 (microseconds)", name, field, ts.GetNanos())
			}
		}
	}
}

func TestWatchSemantics(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx := t.Context()
	w, err := c.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)

	// Hold every send so that events queue, then change the objects: the
	// events carry the state at send time.
	srv.SetSendDelay(time.Hour)
	a, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	aid := a.GetMetadata().GetId()
	for i := range 3 {
		if _, err := c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: aid, Prompt: proto.String(fmt.Sprint("v", i))}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	bid := b.GetMetadata().GetId()
	if err := c.DeleteSession(ctx, bid); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSession(ctx, "never-existed"); err != nil {
		t.Fatalf("delete unknown id: %v", err)
	}
	srv.SetSendDelay(0)

	type got struct {
		typ    ambientv1.EventType
		id     string
		prompt string
		hasObj bool
	}
	want := []got{
		{ambientv1.EventType_EVENT_TYPE_CREATED, aid, "v2", true},
		{ambientv1.EventType_EVENT_TYPE_UPDATED, aid, "v2", true},
		{ambientv1.EventType_EVENT_TYPE_UPDATED, aid, "v2", true},
		{ambientv1.EventType_EVENT_TYPE_UPDATED, aid, "v2", true},
		// b's CREATED vanished: b was deleted before the send.
		{ambientv1.EventType_EVENT_TYPE_DELETED, bid, "", false},
		{ambientv1.EventType_EVENT_TYPE_DELETED, "never-existed", "", false},
	}
	var gots []got
	for range want {
		ev, err := recv(t, w, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		gots = append(gots, got{ev.GetType(), ev.GetResourceId(), ev.GetSession().GetPrompt(), ev.GetSession() != nil})
	}
	if diff := cmp.Diff(want, gots, cmp.AllowUnexported(got{})); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestWatchSendsNoHeadersBeforeFirstEvent(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	w, err := c.WatchProjects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	hdr := make(chan error, 1) // one result
	go func() {
		_, err := w.Header()
		hdr <- err
	}()
	select {
	case err := <-hdr:
		t.Fatalf("headers arrived before any event (err %v)", err)
	case <-time.After(200 * time.Millisecond): // negative check: nothing may happen
	}
	if _, err := c.CreateProject(t.Context(), &ambientv1.CreateProjectRequest{Name: "p1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-hdr:
		if err != nil {
			t.Fatalf("Header: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no headers after the first event")
	}
	ev, err := recv(t, w, 5*time.Second)
	if err != nil || ev.GetProject().GetName() != "p1" {
		t.Fatalf("event %v, err %v", ev, err)
	}
}

func TestEndWatchesEndsStreamsCleanly(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx := t.Context()
	ws, err := c.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wp, err := c.WatchProjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wps, err := c.WatchProjectSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if n := srv.Watchers(); n != 3 {
			return fmt.Errorf("%d watchers, want 3", n)
		}
		return nil
	})
	if n := srv.EndWatches(); n != 3 {
		t.Errorf("EndWatches ended %d, want 3", n)
	}
	for name, fn := range map[string]func() error{
		"sessions":         func() error { _, err := recv(t, ws, 5*time.Second); return err },
		"projects":         func() error { _, err := recv(t, wp, 5*time.Second); return err },
		"project_settings": func() error { _, err := recv(t, wps, 5*time.Second); return err },
	} {
		if err := fn(); !errors.Is(err, io.EOF) {
			t.Errorf("%s: Recv err %v, want io.EOF", name, err)
		}
	}
	eventually(t, 5*time.Second, func() error {
		if n := srv.Watchers(); n != 0 {
			return fmt.Errorf("%d watchers left", n)
		}
		return nil
	})
	// A new watch works after EndWatches.
	w2, err := c.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)
	if _, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if ev, err := recv(t, w2, 5*time.Second); err != nil || ev.GetSession().GetName() != "x" {
		t.Fatalf("after EndWatches: %v, %v", ev, err)
	}
}

func TestFailNext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		n    int
		code codes.Code
	}{
		{"one unavailable", 1, codes.Unavailable},
		{"three internal", 3, codes.Internal},
		{"zero is off", 0, codes.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := start(t)
			c := client(t, srv, testToken)
			ctx := t.Context()
			list := ambientv1.SessionService_ListSessions_FullMethodName
			srv.FailNext(list, tc.n, tc.code)
			for i := range tc.n {
				_, err := c.ListSessions(ctx)
				if got := status.Code(err); got != tc.code {
					t.Fatalf("call %d: code %v, want %v", i, got, tc.code)
				}
			}
			if _, err := c.ListSessions(ctx); err != nil {
				t.Fatalf("call after %d failures: %v", tc.n, err)
			}
			if got := srv.CallCount(list); got != tc.n+1 {
				t.Errorf("CallCount = %d, want %d", got, tc.n+1)
			}
			if got := srv.CountCalls(list); got != tc.n+1 {
				t.Errorf("CountCalls = %d, want %d", got, tc.n+1)
			}
			// Other methods are not affected.
			if _, err := c.ListProjects(ctx); err != nil {
				t.Errorf("ListProjects: %v", err)
			}
		})
	}
	t.Run("watch", func(t *testing.T) {
		t.Parallel()
		srv := start(t)
		c := client(t, srv, testToken)
		srv.FailNext(ambientv1.SessionService_WatchSessions_FullMethodName, 1, codes.Unavailable)
		w, err := c.WatchSessions(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := recv(t, w, 5*time.Second); status.Code(err) != codes.Unavailable {
			t.Fatalf("Recv: %v, want Unavailable", err)
		}
	})
}

// TestSlowReaderLosesEvents uses a client that stops reading with a fixed
// 64 KiB flow-control window (no BDP growth), so the server's sends block
// and its 256 event buffer overflows.
func TestSlowReaderLosesEvents(t *testing.T) {
	t.Parallel()
	srv := start(t)
	const window = 64 << 10
	reader := client(t, srv, testToken, grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
	writer := client(t, srv, testToken)
	ctx := t.Context()
	w, err := reader.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)
	const n = 1000
	prompt := strings.Repeat("x", 4<<10)
	for i := range n {
		if _, err := srv.Sessions().CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: fmt.Sprint(i), Prompt: proto.String(prompt)}); err != nil {
			t.Fatal(err)
		}
	}
	dropped := srv.Dropped()
	if dropped == 0 {
		t.Fatal("no event dropped")
	}
	// Everything not dropped arrives, then nothing else: a marker created
	// now is the next event.
	delivered := n - int(dropped)
	if delivered < memapi.DefaultWatchBuffer {
		t.Errorf("delivered %d < buffer %d", delivered, memapi.DefaultWatchBuffer)
	}
	for i := range delivered {
		if _, err := recv(t, w, 10*time.Second); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if _, err := writer.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "marker"}); err != nil {
		t.Fatal(err)
	}
	ev, err := recv(t, w, 10*time.Second)
	if err != nil || ev.GetSession().GetName() != "marker" {
		t.Fatalf("want the marker next, got %v (err %v); dropped %d", ev.GetSession().GetName(), err, dropped)
	}
	t.Logf("delivered %d, dropped %d of %d", delivered, dropped, n)
}

func TestSendDelay(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	w := watchProjects(t, srv, c)
	const d = 100 * time.Millisecond
	srv.SetSendDelay(d)
	begin := time.Now()
	if _, err := c.CreateProject(t.Context(), &ambientv1.CreateProjectRequest{Name: "p1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := recv(t, w, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(begin); el < d {
		t.Errorf("event after %v, want >= %v", el, d)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	srv := start(t)
	tests := []struct {
		name  string
		token string
		want  codes.Code
	}{
		{"missing token", "", codes.Unauthenticated},
		{"wrong token", "nope", codes.Unauthenticated},
		{"right token", testToken, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := client(t, srv, tc.token)
			calls := map[string]func() error{
				"get":  func() error { _, err := c.GetProject(t.Context(), "x"); return err },
				"list": func() error { _, err := c.ListSessions(t.Context()); return err },
				"status": func() error {
					_, err := c.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: "x"})
					return err
				},
			}
			for name, call := range calls {
				got := status.Code(call())
				if tc.want == codes.OK && got == codes.Unauthenticated || tc.want != codes.OK && got != tc.want {
					t.Errorf("%s: code %v, want %v", name, got, tc.want)
				}
			}
			if tc.want == codes.OK {
				return
			}
			w, err := c.WatchSessions(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := recv(t, w, 5*time.Second); status.Code(err) != tc.want {
				t.Errorf("watch Recv: %v, want %v", err, tc.want)
			}
		})
	}
	// The real server's interceptors exempt exactly the health check and
	// v1alpha reflection; the rest of those services needs the token too.
	t.Run("exempt calls", func(t *testing.T) {
		t.Parallel()
		c := client(t, srv, "")
		resp, err := healthpb.NewHealthClient(c.Conn()).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health check without a token: %v, %v", resp, err)
		}
		hw, err := healthpb.NewHealthClient(c.Conn()).Watch(t.Context(), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hw.Recv(); status.Code(err) != codes.Unauthenticated {
			t.Errorf("health watch without a token: %v, want Unauthenticated", err)
		}
		if err := listServices(t, c.Conn(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"); err != nil {
			t.Errorf("v1alpha reflection without a token: %v", err)
		}
		if err := listServices(t, c.Conn(), reflectionpb.ServerReflection_ServerReflectionInfo_FullMethodName); status.Code(err) != codes.Unauthenticated {
			t.Errorf("v1 reflection without a token: %v, want Unauthenticated", err)
		}
	})
}

// listServices asks the reflection service at method (v1 and v1alpha share
// their messages) to list the services.
func listServices(t *testing.T, conn *grpc.ClientConn, method string) error {
	t.Helper()
	st, err := conn.NewStream(t.Context(), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
	if err != nil {
		return err
	}
	// io.EOF: the server ended the stream already (a rejected call can beat
	// the request); RecvMsg returns its status.
	if err := st.SendMsg(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	var resp reflectionpb.ServerReflectionResponse
	if err := st.RecvMsg(&resp); err != nil {
		return err
	}
	if len(resp.GetListServicesResponse().GetService()) == 0 {
		return fmt.Errorf("no services listed: %v", &resp)
	}
	return st.CloseSend()
}

func TestListHook(t *testing.T) {
	t.Parallel()
	srv := start(t)
	seedSessions(t, srv, 45)
	c := client(t, srv, testToken)
	var mu sync.Mutex
	var pages []int32 // guarded by mu
	srv.SetListHook(func(method string, page int32) {
		if method != ambientv1.SessionService_ListSessions_FullMethodName {
			t.Errorf("hook method %s", method)
		}
		mu.Lock()
		pages = append(pages, page)
		mu.Unlock()
		if page == 1 {
			// Created while the list is in progress: after page 1 was read.
			if _, err := srv.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "late"}); err != nil {
				t.Error(err)
			}
		}
	})
	items, err := apiclient.ListAll(t.Context(), 20, func(ctx context.Context, page, size int32) (*ambientv1.ListSessionsResponse, error) {
		return c.Sessions().ListSessions(ctx, &ambientv1.ListSessionsRequest{Page: page, Size: size})
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetListHook(nil)
	// Page 1 said total 45; creation order puts "late" last, on page 3.
	if len(items) != 46 || items[45].GetName() != "late" {
		t.Errorf("got %d items, last %q", len(items), items[len(items)-1].GetName())
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]int32{1, 2, 3}, pages); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
}

func TestServeShutdownEndsWatchesWithEOF(t *testing.T) {
	t.Parallel()
	srv, err := memapi.New(memapi.WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1) // one result
	go func() { done <- srv.ListenAndServe(ctx, "127.0.0.1:0", "127.0.0.1:0") }()
	<-srv.Ready()
	c := client(t, srv, testToken)
	w, err := c.WatchSessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)
	cancel()
	if _, err := recv(t, w, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after shutdown: %v, want io.EOF", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if err := srv.Serve(t.Context(), nil, nil); !errors.Is(err, memapi.ErrServing) {
		t.Errorf("second Serve: %v, want ErrServing", err)
	}
}

// TestWatchPendingAndSent follows events through the counters a test uses to
// know the server has nothing left to send: queued, sent, vanished (deleted
// before the send) and abandoned (the stream ended first).
func TestWatchPendingAndSent(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	w := watchProjects(t, srv, c)
	counts := func() string { return fmt.Sprintf("pending %d, sent %d", srv.WatchPending(), srv.WatchSent()) }
	srv.SetSendDelay(time.Hour)
	var ids []string
	for _, name := range []string{"p1", "p2", "p3"} {
		p, err := c.CreateProject(t.Context(), &ambientv1.CreateProjectRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.GetMetadata().GetId())
	}
	if got, want := counts(), "pending 3, sent 0"; got != want {
		t.Fatalf("three creates held back: %s, want %s", got, want)
	}
	// p3's CREATED vanishes when its turn comes (the object is gone); its
	// DELETED is sent.
	if err := c.DeleteProject(t.Context(), ids[2]); err != nil {
		t.Fatal(err)
	}
	srv.SetSendDelay(0)
	for range 3 {
		if _, err := recv(t, w, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, func() error {
		if got, want := counts(), "pending 0, sent 3"; got != want {
			return fmt.Errorf("after the sends: %s, want %s", got, want)
		}
		return nil
	})
	srv.SetSendDelay(time.Hour)
	if _, err := c.CreateProject(t.Context(), &ambientv1.CreateProjectRequest{Name: "p4"}); err != nil {
		t.Fatal(err)
	}
	if got, want := counts(), "pending 1, sent 3"; got != want {
		t.Fatalf("one more held back: %s, want %s", got, want)
	}
	srv.EndWatches()
	eventually(t, 5*time.Second, func() error {
		if got, want := counts(), "pending 0, sent 3"; got != want {
			return fmt.Errorf("after the stream ended: %s, want %s", got, want)
		}
		return nil
	})
}
