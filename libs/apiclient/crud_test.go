package apiclient_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// crudCall is one CRUD method of Client, its result dropped.
type crudCall struct {
	name string
	do   func(ctx context.Context) error
}

// crudCalls returns a call of every CRUD method of c (for error checks).
func crudCalls(c *apiclient.Client) []crudCall {
	drop := func(_ any, err error) error { return err }
	return []crudCall{
		{"GetSession", func(ctx context.Context) error { return drop(c.GetSession(ctx, "x")) }},
		{"CreateSession", func(ctx context.Context) error {
			return drop(c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "x"}))
		}},
		{"UpdateSession", func(ctx context.Context) error {
			return drop(c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: "x"}))
		}},
		{"DeleteSession", func(ctx context.Context) error { return c.DeleteSession(ctx, "x") }},
		{"UpdateSessionStatus", func(ctx context.Context) error {
			return drop(c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: "x", Phase: proto.String("Running")}))
		}},
		{"GetProject", func(ctx context.Context) error { return drop(c.GetProject(ctx, "px")) }},
		{"CreateProject", func(ctx context.Context) error {
			return drop(c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "px"}))
		}},
		{"UpdateProject", func(ctx context.Context) error {
			return drop(c.UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: "px"}))
		}},
		{"DeleteProject", func(ctx context.Context) error { return c.DeleteProject(ctx, "px") }},
		{"GetProjectSettings", func(ctx context.Context) error { return drop(c.GetProjectSettings(ctx, "x")) }},
		{"CreateProjectSettings", func(ctx context.Context) error {
			return drop(c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "px"}))
		}},
		{"UpdateProjectSettings", func(ctx context.Context) error {
			return drop(c.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: "x"}))
		}},
		{"DeleteProjectSettings", func(ctx context.Context) error { return c.DeleteProjectSettings(ctx, "x") }},
	}
}

// TestProjectCRUD creates, reads, updates and deletes a project.
func TestProjectCRUD(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	c := testenv.APIClient(t, srv)
	ctx := t.Context()

	p, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "p1", DisplayName: proto.String("P one")})
	if err != nil || p.GetMetadata().GetId() != "p1" || p.GetName() != "p1" || p.GetDisplayName() != "P one" {
		t.Fatalf("create: %v, %v", p, err)
	}
	// A taken name: the server's code survives the client's wrapping.
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "p1"}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("create again: %v, want AlreadyExists", err)
	}
	if got, err := c.GetProject(ctx, "p1"); err != nil || got.GetName() != "p1" || got.GetDisplayName() != "P one" {
		t.Fatalf("get: %v, %v", got, err)
	}
	up, err := c.UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: "p1", Description: proto.String("updated")})
	if err != nil || up.GetDescription() != "updated" || up.GetDisplayName() != "P one" {
		t.Fatalf("update: %v, %v", up, err)
	}
	if got, err := c.GetProject(ctx, "p1"); err != nil || got.GetDescription() != "updated" {
		t.Fatalf("get after update: %v, %v", got, err)
	}
	if _, err := c.UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: "nope", Description: proto.String("x")}); status.Code(err) != codes.NotFound {
		t.Fatalf("update unknown: %v, want NotFound", err)
	}
	if err := c.DeleteProject(ctx, "p1"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if got, err := c.GetProject(ctx, "p1"); status.Code(err) != codes.NotFound {
		t.Fatalf("get after delete: %v, %v, want NotFound", got, err)
	}
}

// TestProjectSettingsCRUD creates, reads, updates and deletes project
// settings.
func TestProjectSettingsCRUD(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	c := testenv.APIClient(t, srv)
	ctx := t.Context()

	// Settings need their project (the API's foreign key).
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "p1"}); err != nil {
		t.Fatalf("create project: %v", err)
	}
	ps, err := c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "p1", GroupAccess: proto.String("[]")})
	id := ps.GetMetadata().GetId()
	if err != nil || id == "" || ps.GetProjectId() != "p1" || ps.GetGroupAccess() != "[]" {
		t.Fatalf("create: %v, %v", ps, err)
	}
	if got, err := c.GetProjectSettings(ctx, id); err != nil || got.GetMetadata().GetId() != id || got.GetProjectId() != "p1" {
		t.Fatalf("get: %v, %v", got, err)
	}
	const repos = `[{"url":"https://example.com/r"}]`
	up, err := c.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: id, Repositories: proto.String(repos)})
	if err != nil || up.GetRepositories() != repos || up.GetProjectId() != "p1" {
		t.Fatalf("update: %v, %v", up, err)
	}
	if got, err := c.GetProjectSettings(ctx, id); err != nil || got.GetRepositories() != repos || got.GetGroupAccess() != "[]" {
		t.Fatalf("get after update: %v, %v", got, err)
	}
	if _, err := c.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: "nope", Repositories: proto.String("[]")}); status.Code(err) != codes.NotFound {
		t.Fatalf("update unknown: %v, want NotFound", err)
	}
	if err := c.DeleteProjectSettings(ctx, id); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if got, err := c.GetProjectSettings(ctx, id); status.Code(err) != codes.NotFound {
		t.Fatalf("get after delete: %v, %v, want NotFound", got, err)
	}
	if all, err := c.ListProjectSettings(ctx); err != nil || len(all) != 0 {
		t.Fatalf("list after delete: %v, %v, want none", all, err)
	}
}
