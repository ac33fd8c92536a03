package apiclient

import (
	"context"
	"fmt"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// The CRUD methods call the API with the token and, without a ctx deadline,
// the default timeout. Errors wrap the gRPC status (use status.Code).

// GetSession returns the session with id.
func (c *Client) GetSession(ctx context.Context, id string) (*ambientv1.Session, error) {
	s, err := c.sessions.GetSession(ctx, &ambientv1.GetSessionRequest{Id: id})
	if err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	return s, nil
}

// CreateSession creates a session.
func (c *Client) CreateSession(ctx context.Context, req *ambientv1.CreateSessionRequest) (*ambientv1.Session, error) {
	s, err := c.sessions.CreateSession(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("create session %q: %w", req.GetName(), err)
	}
	return s, nil
}

// UpdateSession sets the fields present in req on session req.Id.
func (c *Client) UpdateSession(ctx context.Context, req *ambientv1.UpdateSessionRequest) (*ambientv1.Session, error) {
	s, err := c.sessions.UpdateSession(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("update session %s: %w", req.GetId(), err)
	}
	return s, nil
}

// DeleteSession deletes the session with id.
func (c *Client) DeleteSession(ctx context.Context, id string) error {
	if _, err := c.sessions.DeleteSession(ctx, &ambientv1.DeleteSessionRequest{Id: id}); err != nil {
		return fmt.Errorf("delete session %s: %w", id, err)
	}
	return nil
}

// UpdateSessionStatus writes the status fields present in req. An invalid
// phase gives codes.InvalidArgument.
func (c *Client) UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	s, err := c.sessions.UpdateSessionStatus(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("update session status %s: %w", req.GetId(), err)
	}
	return s, nil
}

// GetProject returns the project with id (its name).
func (c *Client) GetProject(ctx context.Context, id string) (*ambientv1.Project, error) {
	p, err := c.projects.GetProject(ctx, &ambientv1.GetProjectRequest{Id: id})
	if err != nil {
		return nil, fmt.Errorf("get project %s: %w", id, err)
	}
	return p, nil
}

// CreateProject creates a project (a taken name gives codes.AlreadyExists).
func (c *Client) CreateProject(ctx context.Context, req *ambientv1.CreateProjectRequest) (*ambientv1.Project, error) {
	p, err := c.projects.CreateProject(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("create project %q: %w", req.GetName(), err)
	}
	return p, nil
}

// UpdateProject sets the fields present in req on project req.Id.
func (c *Client) UpdateProject(ctx context.Context, req *ambientv1.UpdateProjectRequest) (*ambientv1.Project, error) {
	p, err := c.projects.UpdateProject(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("update project %s: %w", req.GetId(), err)
	}
	return p, nil
}

// DeleteProject deletes the project with id.
func (c *Client) DeleteProject(ctx context.Context, id string) error {
	if _, err := c.projects.DeleteProject(ctx, &ambientv1.DeleteProjectRequest{Id: id}); err != nil {
		return fmt.Errorf("delete project %s: %w", id, err)
	}
	return nil
}

// GetProjectSettings returns the project settings with id.
func (c *Client) GetProjectSettings(ctx context.Context, id string) (*ambientv1.ProjectSettings, error) {
	p, err := c.settings.GetProjectSettings(ctx, &ambientv1.GetProjectSettingsRequest{Id: id})
	if err != nil {
		return nil, fmt.Errorf("get project settings %s: %w", id, err)
	}
	return p, nil
}

// CreateProjectSettings creates project settings.
func (c *Client) CreateProjectSettings(ctx context.Context, req *ambientv1.CreateProjectSettingsRequest) (*ambientv1.ProjectSettings, error) {
	p, err := c.settings.CreateProjectSettings(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("create project settings for %q: %w", req.GetProjectId(), err)
	}
	return p, nil
}

// UpdateProjectSettings sets the fields present in req on req.Id.
func (c *Client) UpdateProjectSettings(ctx context.Context, req *ambientv1.UpdateProjectSettingsRequest) (*ambientv1.ProjectSettings, error) {
	p, err := c.settings.UpdateProjectSettings(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("update project settings %s: %w", req.GetId(), err)
	}
	return p, nil
}

// DeleteProjectSettings deletes the project settings with id.
func (c *Client) DeleteProjectSettings(ctx context.Context, id string) error {
	if _, err := c.settings.DeleteProjectSettings(ctx, &ambientv1.DeleteProjectSettingsRequest{Id: id}); err != nil {
		return fmt.Errorf("delete project settings %s: %w", id, err)
	}
	return nil
}
