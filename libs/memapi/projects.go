package memapi

import (
	"context"
	"fmt"
	"regexp"

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
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	return x.r.get(req.GetId())
}

// CreateProject needs a name (InvalidArgument "name is required"); the rest
// is create.
func (x *projectService) CreateProject(_ context.Context, req *ambientv1.CreateProjectRequest) (*ambientv1.Project, error) {
	if err := checkRequired("name", req.GetName()); err != nil {
		return nil, err
	}
	obj := &ambientv1.Project{}
	if err := copyFields(obj, req, false); err != nil {
		return nil, errInternal(fmt.Errorf("create project: %w", err))
	}
	return x.create(obj)
}

// create validates the name of obj (a create request's fields, see
// convertBody for REST: a DNS-1123 label of 2 to 63 characters, else 400
// id 8 / InvalidArgument) and stores the project under its name as id; a
// taken name gives AlreadyExists (409 id 6).
func (x *projectService) create(obj *ambientv1.Project) (*ambientv1.Project, error) {
	if err := validateProjectName(obj.GetName()); err != nil {
		return nil, err
	}
	return x.r.create(obj.GetName(), obj)
}

// Project names of the real server: a DNS-1123 label that starts with a
// letter, 2 to 63 characters. The DNS-1123 reason was measured; the length
// rule and its reason are the upstream source's (ValidateProjectName in
// ambient-api-server's projects plugin), not measured.
const projectNameMaxLength = 63

var projectNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]*[a-z0-9]$`)

func validateProjectName(name string) error {
	if len(name) < 2 || len(name) > projectNameMaxLength {
		return errValidation("project name must be between 2 and %d characters", projectNameMaxLength)
	}
	if !projectNameRE.MatchString(name) {
		return errValidation("project name must match DNS-1123 label format: lowercase alphanumeric and hyphens, must start with a letter and end with an alphanumeric character")
	}
	return nil
}

func (x *projectService) UpdateProject(_ context.Context, req *ambientv1.UpdateProjectRequest) (*ambientv1.Project, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	return x.update(req)
}

// update sets the fields present in req (id selects the object). The name
// it leaves must pass the create's rule (the real service validates it on
// every Replace, read from its code); a rename keeps the id, and a rename
// onto another project's name is AlreadyExists (409 id 6) "Changes to
// Project conflict with existing records", the update's reason, not the
// create's.
func (x *projectService) update(req *ambientv1.UpdateProjectRequest) (*ambientv1.Project, error) {
	return x.r.update(req.GetId(), func(obj *ambientv1.Project) error {
		if err := copyFields(obj, req, false, "id"); err != nil {
			return errInternal(fmt.Errorf("update project: %w", err))
		}
		return validateProjectName(obj.GetName())
	})
}

func (x *projectService) DeleteProject(_ context.Context, req *ambientv1.DeleteProjectRequest) (*ambientv1.DeleteProjectResponse, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	x.r.remove(req.GetId())
	return &ambientv1.DeleteProjectResponse{}, nil
}

func (x *projectService) ListProjects(_ context.Context, req *ambientv1.ListProjectsRequest) (*ambientv1.ListProjectsResponse, error) {
	items, meta := x.r.list(req.GetPage(), req.GetSize(), nil, nil)
	return &ambientv1.ListProjectsResponse{Items: items, Metadata: meta}, nil
}

func (x *projectService) WatchProjects(_ *ambientv1.WatchProjectsRequest, stream ambientv1.ProjectService_WatchProjectsServer) error {
	return watch(x.r.s, x.r.st, stream, func(typ ambientv1.EventType, obj *ambientv1.Project, id string) *ambientv1.ProjectWatchEvent {
		return &ambientv1.ProjectWatchEvent{Type: typ, Project: obj, ResourceId: id}
	})
}
