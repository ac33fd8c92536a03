package memapi

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

type projectService struct {
	ambientv1.UnimplementedProjectServiceServer
	r *resource[*ambientv1.Project]
}

var _ ambientv1.ProjectServiceServer = (*projectService)(nil)

// Projects returns the ProjectService implementation for in-process calls;
// see Sessions for the rules.
func (s *Server) Projects() ambientv1.ProjectServiceServer {
	return &projectService{r: s.projectResource()}
}

func (s *Server) projectResource() *resource[*ambientv1.Project] {
	return &resource[*ambientv1.Project]{
		s: s, st: s.projects, kind: "Project", path: "projects",
		listMethod: ambientv1.ProjectService_ListProjects_FullMethodName,
		setMeta:    func(o *ambientv1.Project, m *ambientv1.ObjectReference) { o.Metadata = m },
	}
}

func (x *projectService) GetProject(_ context.Context, req *ambientv1.GetProjectRequest) (*ambientv1.Project, error) {
	return x.r.get(req.GetId())
}

// CreateProject uses the name as id; a taken name gives AlreadyExists.
func (x *projectService) CreateProject(_ context.Context, req *ambientv1.CreateProjectRequest) (*ambientv1.Project, error) {
	if req.GetName() == "" {
		return nil, errInvalid("name is required")
	}
	obj := &ambientv1.Project{}
	if err := wireCopy(obj, req); err != nil {
		return nil, fmt.Errorf("create project: %w", err)
	}
	return x.r.create(req.GetName(), obj)
}

func (x *projectService) UpdateProject(_ context.Context, req *ambientv1.UpdateProjectRequest) (*ambientv1.Project, error) {
	patch := proto.CloneOf(req)
	patch.Id = ""
	return x.r.update(req.GetId(), func(obj *ambientv1.Project) error {
		return wireCopy(obj, patch)
	})
}

func (x *projectService) DeleteProject(_ context.Context, req *ambientv1.DeleteProjectRequest) (*ambientv1.DeleteProjectResponse, error) {
	x.r.remove(req.GetId())
	return &ambientv1.DeleteProjectResponse{}, nil
}

func (x *projectService) ListProjects(_ context.Context, req *ambientv1.ListProjectsRequest) (*ambientv1.ListProjectsResponse, error) {
	items, meta := x.r.list(req.GetPage(), req.GetSize())
	return &ambientv1.ListProjectsResponse{Items: items, Metadata: meta}, nil
}

func (x *projectService) WatchProjects(_ *ambientv1.WatchProjectsRequest, stream ambientv1.ProjectService_WatchProjectsServer) error {
	return watch(x.r.s, x.r.st, stream, func(typ ambientv1.EventType, obj *ambientv1.Project, id string) *ambientv1.ProjectWatchEvent {
		return &ambientv1.ProjectWatchEvent{Type: typ, Project: obj, ResourceId: id}
	})
}
