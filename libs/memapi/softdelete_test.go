package memapi_test

// Facts read from the real server's code, not measured on a deployed
// server (docs/architecture.md): its soft deletes and the unique indexes
// and foreign keys they meet, and its answer to a search its parser
// refuses.

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// wantGRPC fails unless err carries the gRPC status code with message
// msg (apiclient wraps the status with its call's context).
func wantGRPC(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) || se.GRPCStatus().Code() != code || se.GRPCStatus().Message() != msg {
		t.Errorf("%s: %v, want %v %q", what, err, code, msg)
	}
}

// wantREST fails unless the answer is status with the real server's error
// object for id and reason (rh-trex-ai's ServiceError.AsOpenapiError, the
// code prefix and href the API server sets).
func wantREST(t *testing.T, what string, code int, body []byte, wantCode int, id, reason string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("%s: status %d, want %d (%s)", what, code, wantCode, body)
		return
	}
	e := decodeError(t, body)
	if e.ID != id || e.Code != "ambient-api-server-"+id || e.Href != "/api/ambient/v1/errors/"+id || e.Reason != reason || e.OperationID == "" {
		t.Errorf("%s: error %+v, want id %s reason %q", what, e, id, reason)
	}
}

// TestSoftDeleteKeepsKeys: the real server deletes softly (rh-trex-ai
// pkg/db/model.go: db.Model's gorm DeletedAt, which the plugins' daos
// delete through), and the unique indexes of its migrations are plain,
// not partial (WHERE deleted_at IS NULL) ones: projects.name
// (plugins/projects/migration.go, `gorm:"uniqueIndex"`),
// project_settings.project_id (plugins/projectSettings/migration.go),
// and every table's primary key id (a project's id is its name,
// plugins/projects/model.go BeforeCreate). So a deleted row keeps its keys:
// PostgreSQL refuses a new row or a rename onto them ("duplicate key value
// violates unique constraint"), which rh-trex-ai's HandleCreateError /
// HandleUpdateError (pkg/services/util.go) answer with a 409 id 6, sent
// over gRPC as AlreadyExists with the same reason
// (grpcutil.ServiceErrorToGRPC). Sessions and users have no unique column
// but their random ids; a deleted object stays gone for reads.
func TestSoftDeleteKeepsKeys(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	ctx := t.Context()
	const (
		projectExists   = "This Project already exists"
		projectConflict = "Changes to Project conflict with existing records"
		settingsExists  = "This ProjectSettings already exists"
	)

	// A deleted project's name, gRPC and REST.
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteProject(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetProject(ctx, "gone"); status.Code(err) != codes.NotFound {
		t.Errorf("get deleted project: %v, want NotFound", err)
	}
	_, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "gone"})
	wantGRPC(t, "gRPC create onto a deleted name", err, codes.AlreadyExists, projectExists)
	code, body := rc.do("POST", "/projects", `{"name":"gone"}`)
	wantREST(t, "REST create onto a deleted name", code, body, http.StatusConflict, "6", projectExists)

	// A rename onto it, gRPC and REST.
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "keep"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: "keep", Name: proto.String("gone")})
	wantGRPC(t, "gRPC rename onto a deleted name", err, codes.AlreadyExists, projectConflict)
	code, body = rc.do("PATCH", "/projects/keep", `{"name":"gone"}`)
	wantREST(t, "REST rename onto a deleted name", code, body, http.StatusConflict, "6", projectConflict)
	if p, err := c.GetProject(ctx, "keep"); err != nil || p.GetName() != "keep" {
		t.Errorf("refused renames changed the project: %v %v", p, err)
	}

	// A renamed project keeps its id (its first name): deleted, both the
	// id and its last name stay taken.
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "first"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: "first", Name: proto.String("second")}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteProject(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"first", "second"} {
		_, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: name})
		wantGRPC(t, "create "+name+" after its project was deleted", err, codes.AlreadyExists, projectExists)
	}

	// A project's settings: at most one per project, deleted ones counted.
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "ps"}); err != nil {
		t.Fatal(err)
	}
	ps, err := c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "ps"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteProjectSettings(ctx, ps.GetMetadata().GetId()); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "ps"})
	wantGRPC(t, "gRPC settings for a project whose settings were deleted", err, codes.AlreadyExists, settingsExists)
	code, body = rc.do("POST", "/project_settings", `{"project_id":"ps"}`)
	wantREST(t, "REST settings for a project whose settings were deleted", code, body, http.StatusConflict, "6", settingsExists)
	other, err := c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "keep"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: other.GetMetadata().GetId(), ProjectId: proto.String("ps")})
	wantGRPC(t, "gRPC settings moved onto deleted ones' project", err, codes.AlreadyExists, "Changes to ProjectSettings conflict with existing records")

	// PurgeDeleted, a purge of the deleted rows, frees their keys; live
	// rows keep theirs.
	srv.PurgeDeleted()
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "gone"}); err != nil {
		t.Errorf("create onto a purged name: %v", err)
	}
	_, err = c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "keep"})
	wantGRPC(t, "create onto a live name after a purge", err, codes.AlreadyExists, projectExists)
	if err := c.DeleteProject(ctx, "gone"); err != nil {
		t.Fatal(err)
	}

	// Nothing refused was written, and deletes of the deleted still succeed.
	if _, n, _ := srv.Len(); n != 2 { // keep, ps
		t.Errorf("%d live projects, want 2", n)
	}
	if code, _ := rc.do("DELETE", "/projects/gone", ""); code != http.StatusNoContent {
		t.Errorf("delete a deleted project: %d, want 204", code)
	}
}

// TestSessionParentForeignKey: the sessions table's foreign key
// fk_sessions_parent_session_id (parent_session_id REFERENCES
// sessions(id), plugins/sessions/migration.go, schemaExpansionMigration)
// makes PostgreSQL refuse a row naming no session: SQLSTATE 23503, whose
// pgconn text (jackc/pgconn v1.14.3 PgError.Error) rh-trex-ai's
// HandleCreateError / HandleUpdateError (pkg/services/util.go) wrap as a
// GeneralError: REST 500 id 9, gRPC Internal with the same text
// (grpcutil.ServiceErrorToGRPC). "" is a value, not NULL, so it names no
// session either; a deleted (soft-deleted) parent still satisfies the
// key. project_id has no foreign key (only an index), so any project
// will do. An update looks the session up first (404 for an unknown id).
func TestSessionParentForeignKey(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	ctx := t.Context()
	const (
		createFK = `Unable to create Session: ERROR: insert or update on table "sessions" violates foreign key constraint "fk_sessions_parent_session_id" (SQLSTATE 23503)`
		updateFK = `Unable to update Session: ERROR: insert or update on table "sessions" violates foreign key constraint "fk_sessions_parent_session_id" (SQLSTATE 23503)`
	)

	for _, parent := range []string{"nope", ""} {
		_, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "child", ParentSessionId: proto.String(parent)})
		wantGRPC(t, "gRPC create with parent "+parent, err, codes.Internal, createFK)
	}
	code, body := rc.do("POST", "/sessions", `{"name":"child","parent_session_id":"nope"}`)
	wantREST(t, "REST create with an unknown parent", code, body, http.StatusInternalServerError, "9", createFK)
	if n, _, _ := srv.Len(); n != 0 {
		t.Fatalf("%d sessions after refused creates, want 0", n)
	}

	parent, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "parent", ProjectId: proto.String("no-such-project")})
	if err != nil {
		t.Fatalf("a session of an unknown project: %v", err)
	}
	pid := parent.GetMetadata().GetId()
	child, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "child", ParentSessionId: proto.String(pid)})
	if err != nil {
		t.Fatal(err)
	}
	cid := child.GetMetadata().GetId()

	_, err = c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: cid, ParentSessionId: proto.String("nope")})
	wantGRPC(t, "gRPC update to an unknown parent", err, codes.Internal, updateFK)
	code, body = rc.do("PATCH", "/sessions/"+cid, `{"parent_session_id":"nope"}`)
	wantREST(t, "REST update to an unknown parent", code, body, http.StatusInternalServerError, "9", updateFK)
	_, err = c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: "nope", ParentSessionId: proto.String("nope")})
	wantGRPC(t, "gRPC update of an unknown session", err, codes.NotFound, "Session with id='nope' not found")
	if got, err := c.GetSession(ctx, cid); err != nil || got.GetParentSessionId() != pid {
		t.Errorf("refused updates changed the session: %v %v", got, err)
	}

	// A deleted parent still satisfies the key: the row stays.
	if err := c.DeleteSession(ctx, pid); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "orphan", ParentSessionId: proto.String(pid)}); err != nil {
		t.Errorf("create with a deleted parent: %v", err)
	}
	if _, err := c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: cid, Prompt: proto.String("p")}); err != nil {
		t.Errorf("update of a child of a deleted parent: %v", err)
	}
	// Purged, it no longer does for a new row; PostgreSQL checks an
	// update's key only when the update changes it.
	srv.PurgeDeleted()
	_, err = c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "late", ParentSessionId: proto.String(pid)})
	wantGRPC(t, "create with a purged parent", err, codes.Internal, createFK)
	if _, err := c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: cid, Prompt: proto.String("q")}); err != nil {
		t.Errorf("update leaving a purged parent as it is: %v", err)
	}
	_, err = c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: cid, ParentSessionId: proto.String("")})
	wantGRPC(t, "update to parent \"\"", err, codes.Internal, updateFK)
}

// TestProjectSettingsProjectForeignKey: the project_settings table's
// foreign key fk_project_settings_project_id (project_id REFERENCES
// projects(id), plugins/projectSettings/migration.go, constraintMigration)
// makes PostgreSQL refuse settings naming no project, as it refuses a
// session naming no parent (TestSessionParentForeignKey): the services'
// Create / Replace hand the error to HandleCreateError /
// HandleUpdateError with the kind "ProjectSettings" (plugins/
// projectSettings/service.go). The column is NOT NULL, so "" (a REST body
// of null) names no project either; a deleted project still satisfies
// the key; an update that keeps project_id is not checked, and an update
// of an unknown id is its 404 first.
func TestProjectSettingsProjectForeignKey(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	ctx := t.Context()
	const (
		createFK = `Unable to create ProjectSettings: ERROR: insert or update on table "project_settings" violates foreign key constraint "fk_project_settings_project_id" (SQLSTATE 23503)`
		updateFK = `Unable to update ProjectSettings: ERROR: insert or update on table "project_settings" violates foreign key constraint "fk_project_settings_project_id" (SQLSTATE 23503)`
	)

	_, err := c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "nope"})
	wantGRPC(t, "gRPC create for an unknown project", err, codes.Internal, createFK)
	for _, b := range []string{`{"project_id":"nope"}`, `{"project_id":""}`, `{"project_id":null}`, "null"} {
		code, body := rc.do("POST", "/project_settings", b)
		wantREST(t, "REST create "+b, code, body, http.StatusInternalServerError, "9", createFK)
	}
	if _, _, n := srv.Len(); n != 0 {
		t.Fatalf("%d settings after refused creates, want 0", n)
	}

	for _, name := range []string{"p1", "p2", "p3"} {
		if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "p1"})
	if err != nil {
		t.Fatalf("settings of a project: %v", err)
	}
	id := ps.GetMetadata().GetId()
	code, body := rc.do("POST", "/project_settings", `{"project_id":"p2"}`)
	if code != http.StatusCreated {
		t.Fatalf("REST settings of a project: %d %s", code, body)
	}

	_, err = c.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: id, ProjectId: proto.String("nope")})
	wantGRPC(t, "gRPC update to an unknown project", err, codes.Internal, updateFK)
	code, body = rc.do("PATCH", "/project_settings/"+id, `{"project_id":"nope"}`)
	wantREST(t, "REST update to an unknown project", code, body, http.StatusInternalServerError, "9", updateFK)
	_, err = c.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: "nope", ProjectId: proto.String("nope")})
	wantGRPC(t, "gRPC update of unknown settings", err, codes.NotFound, "ProjectSettings with id='nope' not found")
	if got, err := c.GetProjectSettings(ctx, id); err != nil || got.GetProjectId() != "p1" {
		t.Errorf("refused updates changed the settings: %v %v", got, err)
	}
	if _, err := c.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: id, ProjectId: proto.String("p3")}); err != nil {
		t.Errorf("settings moved to an existing project: %v", err)
	}

	// A deleted project still satisfies the key: the row stays.
	for _, name := range []string{"p3", "p4"} {
		if name == "p4" {
			if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: name}); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.DeleteProject(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: id, GroupAccess: proto.String("[]")}); err != nil {
		t.Errorf("update of settings of a deleted project: %v", err)
	}
	code, body = rc.do("POST", "/project_settings", `{"project_id":"p4"}`)
	if code != http.StatusCreated {
		t.Errorf("REST settings of a deleted project: %d %s, want 201", code, body)
	}

	// Purged, a deleted project no longer does for new settings; an
	// update that keeps project_id is not checked.
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "p5"}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteProject(ctx, "p5"); err != nil {
		t.Fatal(err)
	}
	srv.PurgeDeleted()
	_, err = c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "p5"})
	wantGRPC(t, "create for a purged project", err, codes.Internal, createFK)
	if _, err := c.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: id, Repositories: proto.String("[]")}); err != nil {
		t.Errorf("update keeping a purged project: %v", err)
	}
	_, err = c.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: id, ProjectId: proto.String("")})
	wantGRPC(t, "update to project_id \"\"", err, codes.Internal, updateFK)
}

// TestRESTSearchThatDoesNotParse: a search the real parser refuses
// (tree-search-language's ParseTSL) is rh-trex-ai's
// errors.BadRequest("Failed to parse search query: %s", search)
// (pkg/services/generic.go, buildSearchValues): 400 id 21 quoting the
// search as the list saw it, trimmed of spaces (pkg/services/types.go
// NewListArguments) and, on the sessions list, inside the filter the
// project_id parameter builds (plugins/sessions/handler.go). A search the
// real parser takes but memapi cannot evaluate is memapi's own 400 id 23.
func TestRESTSearchThatDoesNotParse(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	for _, tc := range []struct {
		path, search, id, reason string
	}{
		{"/sessions", "name =", "21", "Failed to parse search query: name ="},
		{"/sessions", "  name = 'a' 'b'  ", "21", "Failed to parse search query: name = 'a' 'b'"},
		{"/sessions", "name = 'a'\f", "21", "Failed to parse search query: name = 'a'\f"}, // \t, \r, \n, \v are TSL spaces; \f is not
		{"/sessions?project_id=p1", "name ==", "21", "Failed to parse search query: project_id = 'p1' and (name ==)"},
		{"/projects", "(name = 'a'", "21", "Failed to parse search query: (name = 'a'"},
		{"/project_settings", "project_id like 5", "21", "Failed to parse search query: project_id like 5"},
		{"/users", "name = 'a'; drop table users", "21", "Failed to parse search query: name = 'a'; drop table users"},
		{"/sessions", "name < 'a'", "23", "Failed to parse search query: unsupported character '<' at 5"},
	} {
		sep := "?"
		if strings.Contains(tc.path, "?") {
			sep = "&"
		}
		path := tc.path + sep + "search=" + url.QueryEscape(tc.search)
		code, body := rc.do("GET", path, "")
		wantREST(t, "GET "+path, code, body, http.StatusBadRequest, tc.id, tc.reason)
	}
}

// TestRESTSessionListProjectIDIsPartOfTheSearch: the real sessions list
// pastes its project_id parameter into the search text ("project_id =
// 'P' and (<search>)", plugins/sessions/handler.go), so a search that
// closes the parenthesis widens the list beyond the project: AND binds
// tighter than OR in TSL, and the result is (project_id = 'pa' and name =
// 'a1') or (name = 'b1').
func TestRESTSessionListProjectIDIsPartOfTheSearch(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	for _, s := range []struct{ name, project string }{{"a1", "pa"}, {"a2", "pa"}, {"b1", "pb"}} {
		if _, err := c.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: s.name, ProjectId: proto.String(s.project)}); err != nil {
			t.Fatal(err)
		}
	}
	code, body := rc.do("GET", "/sessions?project_id=pa&search="+url.QueryEscape("name = 'a1') or (name = 'b1'"), "")
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	var l restapi.List
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range l.Items {
		names = append(names, decodeSession(t, it).GetName())
	}
	if l.Total != 2 || strings.Join(names, ",") != "a1,b1" {
		t.Errorf("total %d, items %v; want a1 and b1", l.Total, names)
	}
}
