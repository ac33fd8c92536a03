package memapi

import (
	"context"
	"fmt"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

type projectSettingsService struct {
	ambientv1.UnimplementedProjectSettingsServiceServer
	r *resource[*ambientv1.ProjectSettings]
}

var _ ambientv1.ProjectSettingsServiceServer = (*projectSettingsService)(nil)

// ProjectSettings returns the ProjectSettingsService implementation for
// in-process calls; see Sessions for the rules.
func (s *Server) ProjectSettings() ambientv1.ProjectSettingsServiceServer {
	return &projectSettingsService{r: s.settingsResource()}
}

func (s *Server) settingsResource() *resource[*ambientv1.ProjectSettings] {
	return &resource[*ambientv1.ProjectSettings]{
		s: s, st: s.settings, kind: "ProjectSettings", path: "project_settings",
		listMethod: ambientv1.ProjectSettingsService_ListProjectSettings_FullMethodName,
		setMeta:    func(o *ambientv1.ProjectSettings, m *ambientv1.ObjectReference) { o.Metadata = m },
	}
}

func (x *projectSettingsService) GetProjectSettings(_ context.Context, req *ambientv1.GetProjectSettingsRequest) (*ambientv1.ProjectSettings, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	return x.r.get(req.GetId())
}

// CreateProjectSettings needs a project_id (InvalidArgument "project_id is
// required"); the rest is create.
func (x *projectSettingsService) CreateProjectSettings(_ context.Context, req *ambientv1.CreateProjectSettingsRequest) (*ambientv1.ProjectSettings, error) {
	if err := checkRequired("project_id", req.GetProjectId()); err != nil {
		return nil, err
	}
	obj := &ambientv1.ProjectSettings{}
	if err := copyFields(obj, req, false); err != nil {
		return nil, errInternal(fmt.Errorf("create project settings: %w", err))
	}
	return x.create(obj)
}

// create stores obj (a create request's fields, see convertBody for REST)
// as new settings under a fresh id; settings for a project whose settings
// were deleted are AlreadyExists (the unique index keeps deleted rows,
// see store.gone). The project must exist, a deleted one will do, else
// the real server's foreign key error (the settings store's, see New).
func (x *projectSettingsService) create(obj *ambientv1.ProjectSettings) (*ambientv1.ProjectSettings, error) {
	return x.r.create(newID(), obj)
}

func (x *projectSettingsService) UpdateProjectSettings(_ context.Context, req *ambientv1.UpdateProjectSettingsRequest) (*ambientv1.ProjectSettings, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	return x.update(req)
}

// update sets the fields present in req (id selects the object); a
// project_id naming no project is refused after the lookup, as the real
// database refuses the row (the store's foreign key).
func (x *projectSettingsService) update(req *ambientv1.UpdateProjectSettingsRequest) (*ambientv1.ProjectSettings, error) {
	return x.r.update(req.GetId(), func(obj *ambientv1.ProjectSettings) error {
		if err := copyFields(obj, req, false, "id"); err != nil {
			return errInternal(fmt.Errorf("update project settings: %w", err))
		}
		return nil
	})
}

func (x *projectSettingsService) DeleteProjectSettings(_ context.Context, req *ambientv1.DeleteProjectSettingsRequest) (*ambientv1.DeleteProjectSettingsResponse, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	x.r.remove(req.GetId())
	return &ambientv1.DeleteProjectSettingsResponse{}, nil
}

func (x *projectSettingsService) ListProjectSettings(_ context.Context, req *ambientv1.ListProjectSettingsRequest) (*ambientv1.ListProjectSettingsResponse, error) {
	items, meta := x.r.list(req.GetPage(), req.GetSize(), nil, nil)
	return &ambientv1.ListProjectSettingsResponse{Items: items, Metadata: meta}, nil
}

func (x *projectSettingsService) WatchProjectSettings(_ *ambientv1.WatchProjectSettingsRequest, stream ambientv1.ProjectSettingsService_WatchProjectSettingsServer) error {
	return watch(x.r.s, x.r.st, stream, func(typ ambientv1.EventType, obj *ambientv1.ProjectSettings, id string) *ambientv1.ProjectSettingsWatchEvent {
		return &ambientv1.ProjectSettingsWatchEvent{Type: typ, ProjectSettings: obj, ResourceId: id}
	})
}
