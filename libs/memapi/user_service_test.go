package memapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// The tests in this file hold UserService and the users REST routes to the
// real server's plugins/users (read from its code, not measured): the API's
// User objects, not the callers of memapi's multi-user mode.

var ksuidLike = regexp.MustCompile(`^[0-9A-Za-z]{27}$`)

// userClient returns a UserService client of srv with token tok over a
// real connection.
func userClient(t *testing.T, srv *memapi.Server, tok string) ambientv1.UserServiceClient {
	t.Helper()
	return ambientv1.NewUserServiceClient(client(t, srv, tok).Conn())
}

// wantStatus fails unless err is a gRPC status with code and message.
func wantStatus(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || st.Message() != msg {
		t.Errorf("%s: %v, want %v %q", what, err, code, msg)
	}
}

func decodeUser(t *testing.T, b []byte) *ambientv1.User {
	t.Helper()
	u := &ambientv1.User{}
	if err := restapi.UnmarshalObject(b, u); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return u
}

// TestUserServiceGRPC: every unary RPC of UserService as the real gRPC
// handler answers it: the create's two required fields (username first),
// the metadata of a new user, gets and lists in microseconds, an update
// that sets only the fields present and checks none, no unique username,
// paging, and deletes that succeed for unknown ids.
func TestUserServiceGRPC(t *testing.T) {
	t.Parallel()
	srv := start(t)
	uc := userClient(t, srv, testToken)
	ctx := t.Context()

	for _, tc := range []struct {
		name string
		req  *ambientv1.CreateUserRequest
		msg  string
	}{
		{"nothing", &ambientv1.CreateUserRequest{}, "username is required"},
		{"no username", &ambientv1.CreateUserRequest{Name: "Ann"}, "username is required"},
		{"no name", &ambientv1.CreateUserRequest{Username: "ann"}, "name is required"},
		{"long username", &ambientv1.CreateUserRequest{Username: strings.Repeat("u", 256), Name: "Ann"}, "username exceeds maximum length of 255"},
		{"long name", &ambientv1.CreateUserRequest{Username: "ann", Name: strings.Repeat("n", 256)}, "name exceeds maximum length of 255"},
	} {
		_, err := uc.CreateUser(ctx, tc.req)
		wantStatus(t, "create "+tc.name, err, codes.InvalidArgument, tc.msg)
	}
	if l, err := uc.ListUsers(ctx, &ambientv1.ListUsersRequest{}); err != nil || l.GetMetadata().GetTotal() != 0 {
		t.Fatalf("after the refused creates: %v %v, want no user", l, err)
	}

	ann, err := uc.CreateUser(ctx, &ambientv1.CreateUserRequest{Username: "ann", Name: "Ann", Email: proto.String("ann@example.com")})
	if err != nil {
		t.Fatal(err)
	}
	id := ann.GetMetadata().GetId()
	md := ann.GetMetadata()
	if !ksuidLike.MatchString(id) || md.GetKind() != "User" || md.GetHref() != "/api/ambient/v1/users/"+id ||
		md.GetCreatedAt() == nil || !proto.Equal(md.GetCreatedAt(), md.GetUpdatedAt()) ||
		ann.GetUsername() != "ann" || ann.GetName() != "Ann" || ann.GetEmail() != "ann@example.com" {
		t.Fatalf("created %v", ann)
	}
	// A username may be taken twice: the users table has no unique index.
	twin, err := uc.CreateUser(ctx, &ambientv1.CreateUserRequest{Username: "ann", Name: "Other Ann"})
	if err != nil {
		t.Fatalf("second user named ann: %v", err)
	}
	if twin.GetMetadata().GetId() == id || twin.Email != nil {
		t.Fatalf("second ann %v", twin)
	}

	got, err := uc.GetUser(ctx, &ambientv1.GetUserRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetUsername() != "ann" || got.GetEmail() != "ann@example.com" || got.GetMetadata().GetCreatedAt().GetNanos()%1000 != 0 ||
		got.GetMetadata().GetCreatedAt().AsTime() != ann.GetMetadata().GetCreatedAt().AsTime().Truncate(time.Microsecond) {
		t.Fatalf("get %v, want the created user in microseconds (created %v)", got, ann)
	}

	_, err = uc.GetUser(ctx, &ambientv1.GetUserRequest{Id: "nope"})
	wantStatus(t, "get unknown", err, codes.NotFound, "User with id='nope' not found")
	_, err = uc.GetUser(ctx, &ambientv1.GetUserRequest{})
	wantStatus(t, "get without id", err, codes.InvalidArgument, "id is required")
	_, err = uc.UpdateUser(ctx, &ambientv1.UpdateUserRequest{Name: proto.String("x")})
	wantStatus(t, "update without id", err, codes.InvalidArgument, "id is required")
	_, err = uc.UpdateUser(ctx, &ambientv1.UpdateUserRequest{Id: "nope", Name: proto.String("x")})
	wantStatus(t, "update unknown", err, codes.NotFound, "User with id='nope' not found")
	_, err = uc.DeleteUser(ctx, &ambientv1.DeleteUserRequest{})
	wantStatus(t, "delete without id", err, codes.InvalidArgument, "id is required")

	// Only the fields present change, each as sent, unchecked: an empty
	// username is taken (the handler checks nothing on an update).
	up, err := uc.UpdateUser(ctx, &ambientv1.UpdateUserRequest{Id: id, Name: proto.String("Ann B")})
	if err != nil {
		t.Fatal(err)
	}
	if up.GetName() != "Ann B" || up.GetUsername() != "ann" || up.GetEmail() != "ann@example.com" ||
		!up.GetMetadata().GetUpdatedAt().AsTime().After(up.GetMetadata().GetCreatedAt().AsTime()) ||
		up.GetMetadata().GetCreatedAt().AsTime() != got.GetMetadata().GetCreatedAt().AsTime() {
		t.Fatalf("update of name: %v", up)
	}
	up, err = uc.UpdateUser(ctx, &ambientv1.UpdateUserRequest{Id: id, Username: proto.String(""), Email: proto.String("")})
	if err != nil {
		t.Fatalf("update to an empty username: %v", err)
	}
	if up.GetUsername() != "" || up.Email == nil || up.GetEmail() != "" || up.GetName() != "Ann B" {
		t.Fatalf("update of username and email: %v", up)
	}

	for i := range 3 {
		if _, err := uc.CreateUser(ctx, &ambientv1.CreateUserRequest{Username: fmt.Sprintf("u%d", i), Name: "U"}); err != nil {
			t.Fatal(err)
		}
	}
	// Database order: ann, created first and updated since, comes after
	// the other ann.
	list, err := uc.ListUsers(ctx, &ambientv1.ListUsersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, u := range list.GetItems() {
		order = append(order, u.GetName()+"/"+u.GetUsername())
		if u.GetMetadata().GetUpdatedAt().GetNanos()%1000 != 0 {
			t.Errorf("listed %v in nanoseconds", u)
		}
	}
	wantOrder := []string{"Other Ann/ann", "Ann B/", "U/u0", "U/u1", "U/u2"}
	if !slices.Equal(order, wantOrder) || list.GetMetadata().GetPage() != 1 || list.GetMetadata().GetSize() != 5 || list.GetMetadata().GetTotal() != 5 {
		t.Fatalf("list %v %v, want %v page 1 size 5 total 5", order, list.GetMetadata(), wantOrder)
	}
	page, err := uc.ListUsers(ctx, &ambientv1.ListUsersRequest{Page: 2, Size: 2})
	if err != nil {
		t.Fatal(err)
	}
	if m := page.GetMetadata(); len(page.GetItems()) != 2 || page.GetItems()[0].GetUsername() != "u0" || m.GetPage() != 2 || m.GetSize() != 2 || m.GetTotal() != 5 {
		t.Fatalf("page 2 size 2: %v", page)
	}
	clamped, err := uc.ListUsers(ctx, &ambientv1.ListUsersRequest{Page: -1, Size: memapi.MaxPageSize + 1})
	if err != nil {
		t.Fatal(err)
	}
	if m := clamped.GetMetadata(); m.GetPage() != 1 || m.GetSize() != 5 || m.GetTotal() != 5 {
		t.Fatalf("clamped list meta %v", m)
	}

	if _, err := uc.DeleteUser(ctx, &ambientv1.DeleteUserRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	_, err = uc.GetUser(ctx, &ambientv1.GetUserRequest{Id: id})
	wantStatus(t, "get deleted", err, codes.NotFound, "User with id='"+id+"' not found")
	if _, err := uc.DeleteUser(ctx, &ambientv1.DeleteUserRequest{Id: id}); err != nil {
		t.Fatalf("delete again: %v, want success", err)
	}
}

// TestWatchUsers: WatchUsers has the watch semantics of every kind:
// CREATED and UPDATED carry the user, DELETED only resource_id (also for
// an unknown id), and the other kinds' changes are not sent.
func TestWatchUsers(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	uc := ambientv1.NewUserServiceClient(c.Conn())
	ctx := t.Context()
	w, err := uc.WatchUsers(ctx, &ambientv1.WatchUsersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)
	next := func(change func() error) *ambientv1.UserWatchEvent {
		t.Helper()
		if err := change(); err != nil {
			t.Fatal(err)
		}
		ev, err := recv(t, w, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	var id string
	ev := next(func() error {
		// A project change first: the user watcher must skip it.
		if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "p1"}); err != nil {
			return err
		}
		u, err := uc.CreateUser(ctx, &ambientv1.CreateUserRequest{Username: "ann", Name: "Ann"})
		id = u.GetMetadata().GetId()
		return err
	})
	if ev.GetType() != ambientv1.EventType_EVENT_TYPE_CREATED || ev.GetResourceId() != id || ev.GetUser().GetUsername() != "ann" ||
		ev.GetUser().GetMetadata().GetKind() != "User" || ev.GetUser().GetMetadata().GetCreatedAt().GetNanos()%1000 != 0 {
		t.Fatalf("first event %v, want CREATED of user %s (in microseconds)", ev, id)
	}
	ev = next(func() error {
		_, err := uc.UpdateUser(ctx, &ambientv1.UpdateUserRequest{Id: id, Name: proto.String("Ann B")})
		return err
	})
	if ev.GetType() != ambientv1.EventType_EVENT_TYPE_UPDATED || ev.GetResourceId() != id || ev.GetUser().GetName() != "Ann B" {
		t.Fatalf("update event %v", ev)
	}
	for _, del := range []string{id, "never-existed"} {
		ev = next(func() error {
			_, err := uc.DeleteUser(ctx, &ambientv1.DeleteUserRequest{Id: del})
			return err
		})
		if ev.GetType() != ambientv1.EventType_EVENT_TYPE_DELETED || ev.GetResourceId() != del || ev.User != nil {
			t.Fatalf("delete event of %s: %v, want DELETED with only resource_id", del, ev)
		}
	}
}

// TestRESTUsers: the users routes of the real server (plugins/users
// plugin.go, handler.go, presenter.go, the generated openapi.User and
// UserPatchRequest): flat objects of kind User, lists of kind UserList,
// 201/200/204, the model's two required keys (username first) and no
// check of their values, a PATCH of username, name and email only, and
// changes reaching the gRPC watchers.
func TestRESTUsers(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	uc := userClient(t, srv, testToken)
	w, err := uc.WatchUsers(t.Context(), &ambientv1.WatchUsersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)
	nextEvent := func(typ ambientv1.EventType, id string) *ambientv1.UserWatchEvent {
		t.Helper()
		ev, err := recv(t, w, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetType() != typ || ev.GetResourceId() != id {
			t.Fatalf("event %v %s, want %v %s", ev.GetType(), ev.GetResourceId(), typ, id)
		}
		return ev
	}

	for _, tc := range []struct {
		name, body    string
		code          int
		errID, reason string
	}{
		{"no keys", `{}`, 400, "17", "Invalid request format: no value given for required property username"},
		{"no username", `{"name":"Ann"}`, 400, "17", "Invalid request format: no value given for required property username"},
		{"no name", `{"username":"ann"}`, 400, "17", "Invalid request format: no value given for required property name"},
		{"username in capitals", `{"USERNAME":"ann","name":"Ann"}`, 400, "17", "Invalid request format: no value given for required property username"},
		{"unknown key", `{"username":"ann","name":"Ann","role":"admin"}`, 400, "17", `Invalid request format: json: unknown field "role"`},
		{"id", `{"username":"ann","name":"Ann","id":"mine"}`, 400, "8", "id must be empty"},
		{"number for a string", `{"username":"ann","name":5}`, 400, "17", "Invalid request format: json: cannot unmarshal number into Go struct field _User.name of type string"},
	} {
		code, b := rc.do("POST", "/users", tc.body)
		if code != tc.code {
			t.Errorf("create %s: %d %s, want %d", tc.name, code, b, tc.code)
			continue
		}
		if e := decodeError(t, b); e.ID != tc.errID || e.Reason != tc.reason || e.Code != "ambient-api-server-"+tc.errID {
			t.Errorf("create %s: %+v, want id %s reason %q", tc.name, e, tc.errID, tc.reason)
		}
	}
	if err := postExpectingNoAnswer(t, srv.RESTURL()+"/api/ambient/v1/users",
		`{"username":"ann","name":"Ann","created_at":"2020-01-01T00:00:00Z"}`); err != nil {
		t.Errorf("create with created_at and no updated_at (ConvertUser dereferences nil): %v", err)
	}

	code, b := rc.do("POST", "/users", `{"username":"ann","name":"Ann","email":"ann@example.com"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, b)
	}
	ann := decodeUser(t, b)
	id := ann.GetMetadata().GetId()
	var flat map[string]any
	if err := json.Unmarshal(b, &flat); err != nil {
		t.Fatal(err)
	}
	if !ksuidLike.MatchString(id) || flat["kind"] != "User" || flat["href"] != "/api/ambient/v1/users/"+id ||
		flat["username"] != "ann" || flat["name"] != "Ann" || flat["email"] != "ann@example.com" ||
		flat["created_at"] == nil || flat["updated_at"] == nil {
		t.Fatalf("created %s", b)
	}
	nextEvent(ambientv1.EventType_EVENT_TYPE_CREATED, id)

	// Neither value is checked over REST, and both keys are always
	// written (non-pointer fields of openapi.User); email only when set.
	code, b = rc.do("POST", "/users", `{"username":"","name":""}`)
	if code != http.StatusCreated {
		t.Fatalf("create with empty username and name: %d %s, want 201", code, b)
	}
	flat = nil
	if err := json.Unmarshal(b, &flat); err != nil {
		t.Fatal(err)
	}
	if v, ok := flat["username"]; !ok || v != "" {
		t.Errorf("empty user %s: want \"username\":\"\"", b)
	}
	if v, ok := flat["name"]; !ok || v != "" {
		t.Errorf("empty user %s: want \"name\":\"\"", b)
	}
	if _, ok := flat["email"]; ok {
		t.Errorf("empty user %s: email present though unset", b)
	}
	empty := decodeUser(t, b).GetMetadata().GetId()
	nextEvent(ambientv1.EventType_EVENT_TYPE_CREATED, empty)

	code, b = rc.do("GET", "/users/"+id, "")
	if got := decodeUser(t, b); code != http.StatusOK || got.GetUsername() != "ann" || got.GetMetadata().GetCreatedAt().GetNanos()%1000 != 0 {
		t.Fatalf("get: %d %s", code, b)
	}
	code, b = rc.do("GET", "/users/nope", "")
	if e := decodeError(t, b); code != http.StatusNotFound || e.ID != "7" || e.Reason != "User with id='nope' not found" {
		t.Fatalf("get unknown: %d %s", code, b)
	}

	// PATCH: username, name and email; other keys (id, kind, created_at,
	// unknown ones) are ignored; a known key of the wrong type is 400 id 17.
	code, b = rc.do("PATCH", "/users/"+id, `{"name":"Ann B","id":"other","kind":"Nope","role":"admin"}`)
	if got := decodeUser(t, b); code != http.StatusOK || got.GetName() != "Ann B" || got.GetUsername() != "ann" ||
		got.GetEmail() != "ann@example.com" || got.GetMetadata().GetId() != id || got.GetMetadata().GetKind() != "User" {
		t.Fatalf("patch name: %d %s", code, b)
	}
	if ev := nextEvent(ambientv1.EventType_EVENT_TYPE_UPDATED, id); ev.GetUser().GetName() != "Ann B" {
		t.Fatalf("update event %v", ev)
	}
	code, b = rc.do("PATCH", "/users/"+id, `{"username":7}`)
	if e := decodeError(t, b); code != http.StatusBadRequest || e.ID != "17" ||
		e.Reason != "Invalid request format: json: cannot unmarshal number into Go struct field UserPatchRequest.username of type string" {
		t.Fatalf("patch of the wrong type: %d %s", code, b)
	}
	code, b = rc.do("PATCH", "/users/nope", `{"name":"x"}`)
	if e := decodeError(t, b); code != http.StatusNotFound || e.ID != "7" || e.Reason != "User with id='nope' not found" {
		t.Fatalf("patch unknown: %d %s", code, b)
	}

	for i := range 3 {
		code, b := rc.do("POST", "/users", fmt.Sprintf(`{"username":"u%d","name":"U"}`, i))
		if code != http.StatusCreated {
			t.Fatalf("create u%d: %d %s", i, code, b)
		}
		nextEvent(ambientv1.EventType_EVENT_TYPE_CREATED, decodeUser(t, b).GetMetadata().GetId())
	}
	code, b = rc.do("GET", "/users?page=2&size=2", "")
	var l restapi.List
	if err := json.Unmarshal(b, &l); err != nil || code != http.StatusOK {
		t.Fatalf("list: %d %s (%v)", code, b, err)
	}
	// Database order: the empty user, then ann (created first, patched
	// since), then the three u's.
	if l.Kind != "UserList" || l.Page != 2 || l.Size != 2 || l.Total != 5 || len(l.Items) != 2 ||
		decodeUser(t, l.Items[0]).GetUsername() != "u0" || decodeUser(t, l.Items[1]).GetUsername() != "u1" {
		t.Fatalf("list page 2 size 2: %s", b)
	}
	code, b = rc.do("GET", "/users?search="+strings.ReplaceAll("username = 'ann'", " ", "%20"), "")
	l = restapi.List{}
	if err := json.Unmarshal(b, &l); err != nil || code != http.StatusOK || l.Total != 1 || len(l.Items) != 1 ||
		decodeUser(t, l.Items[0]).GetMetadata().GetId() != id {
		t.Fatalf("search username: %d %s (%v)", code, b, err)
	}

	for range 2 {
		// 204 also for an id already gone, and watched each time.
		if code, b := rc.do("DELETE", "/users/"+id, ""); code != http.StatusNoContent || len(b) != 0 {
			t.Fatalf("delete: %d %s", code, b)
		}
		if ev := nextEvent(ambientv1.EventType_EVENT_TYPE_DELETED, id); ev.User != nil {
			t.Fatalf("delete event %v carries a user", ev)
		}
	}
	if code, _ := rc.do("GET", "/users/"+id, ""); code != http.StatusNotFound {
		t.Fatalf("get deleted: %d", code)
	}
}

// TestMultiUserUsersNotNarrowed: in multi-user mode, any user may read
// and change the API's User objects, over REST and gRPC. The real users
// routes keep rh-trex's default authorization middleware, which wants an
// identity and nothing more; projects get the role-binding one.
func TestMultiUserUsersNotNarrowed(t *testing.T) {
	t.Parallel()
	srv := start(t, memapi.WithUsers(users()))
	svc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	alice := restClient{t: t, base: srv.RESTURL(), token: aliceToken}

	code, b := svc.do("POST", "/users", `{"username":"svc","name":"Service made"}`)
	if code != http.StatusCreated {
		t.Fatalf("service creates a user: %d %s", code, b)
	}
	byService := decodeUser(t, b).GetMetadata().GetId()
	code, b = alice.do("POST", "/users", `{"username":"al","name":"Alice made"}`)
	if code != http.StatusCreated {
		t.Fatalf("alice creates a user: %d %s", code, b)
	}
	code, b = alice.do("GET", "/users", "")
	var l restapi.List
	if err := json.Unmarshal(b, &l); err != nil || code != http.StatusOK || l.Total != 2 {
		t.Fatalf("alice lists users: %d %s, want both", code, b)
	}
	if code, b := alice.do("GET", "/users/"+byService, ""); code != http.StatusOK {
		t.Fatalf("alice gets the service's user: %d %s", code, b)
	}
	if code, b := alice.do("PATCH", "/users/"+byService, `{"name":"x"}`); code != http.StatusOK {
		t.Fatalf("alice patches the service's user: %d %s", code, b)
	}
	if code, b := alice.do("DELETE", "/users/"+byService, ""); code != http.StatusNoContent {
		t.Fatalf("alice deletes the service's user: %d %s", code, b)
	}
	list, err := userClient(t, srv, bobToken).ListUsers(t.Context(), &ambientv1.ListUsersRequest{})
	if err != nil || list.GetMetadata().GetTotal() != 1 {
		t.Fatalf("bob lists users over gRPC: %v %v, want alice's", list, err)
	}
	if code, _ := (restClient{t: t, base: srv.RESTURL()}).do("GET", "/users", ""); code != http.StatusUnauthorized {
		t.Fatalf("users without a token: %d, want 401", code)
	}
}

// TestEveryWireRPCIsServed: every RPC of ambient.v1 (the compiled
// descriptors, which proto/ambient/v1/wire_test.go holds to
// ambient-v1-wire.json) is served over a real connection: none answers
// Unimplemented. A watch counts as served once the server registers it.
func TestEveryWireRPCIsServed(t *testing.T) {
	t.Parallel()
	srv := start(t)
	conn := client(t, srv, testToken).Conn()
	var methods int
	for _, svc := range ambientServices() {
		for i := range svc.Methods().Len() {
			m := svc.Methods().Get(i)
			full := fmt.Sprintf("/%s/%s", svc.FullName(), m.Name())
			methods++
			if !m.IsStreamingServer() {
				err := conn.Invoke(t.Context(), full, dynamicpb.NewMessage(m.Input()), dynamicpb.NewMessage(m.Output()))
				if status.Code(err) == codes.Unimplemented {
					t.Errorf("%s: %v", full, err)
				}
				continue
			}
			if err := watchServed(t, srv, conn, full, m); err != nil {
				t.Errorf("%s: %v", full, err)
			}
		}
	}
	if methods != 25 {
		t.Fatalf("%d RPCs in ambient.v1, want the wire contract's 25", methods)
	}
}

// watchServed opens the server stream full and waits until the server
// registered it as a watcher, or the stream ended.
func watchServed(t *testing.T, srv *memapi.Server, conn *grpc.ClientConn, full string, m protoreflect.MethodDescriptor) error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, full)
	if err != nil {
		return err
	}
	if err := st.SendMsg(dynamicpb.NewMessage(m.Input())); err != nil {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	ended := make(chan error, 1) // one result; the goroutine never blocks
	go func() {
		ended <- st.RecvMsg(dynamicpb.NewMessage(m.Output()))
	}()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-ended:
			return fmt.Errorf("stream ended before the server registered it: %w", err)
		case <-deadline:
			return fmt.Errorf("not registered as a watcher (%d watchers)", srv.Watchers())
		case <-tick.C:
		}
		if srv.Watchers() == 1 {
			cancel()
			if err := <-ended; status.Code(err) != codes.Canceled {
				return fmt.Errorf("stream ended with %w after the cancel, want Canceled", err)
			}
			eventually(t, 5*time.Second, func() error {
				if n := srv.Watchers(); n != 0 {
					return fmt.Errorf("%d watchers after the cancel", n)
				}
				return nil
			})
			return nil
		}
	}
}

// ambientServices returns the services of package ambient.v1 as compiled
// into package ambientv1, sorted by name.
func ambientServices() []protoreflect.ServiceDescriptor {
	var out []protoreflect.ServiceDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage("ambient.v1", func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			out = append(out, f.Services().Get(i))
		}
		return true
	})
	slices.SortFunc(out, func(a, b protoreflect.ServiceDescriptor) int {
		return strings.Compare(string(a.FullName()), string(b.FullName()))
	})
	return out
}
