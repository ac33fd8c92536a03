package memapi_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// fillAll sets every field of m except skip to a value derived from its
// name, so a field that lands elsewhere is seen.
func fillAll(m proto.Message, skip ...string) {
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if strings.Contains(" "+strings.Join(skip, " ")+" ", " "+string(fd.Name())+" ") {
			continue
		}
		switch fd.Kind() {
		case protoreflect.StringKind:
			r.Set(fd, protoreflect.ValueOfString("v-"+string(fd.Name())))
		case protoreflect.Int32Kind:
			r.Set(fd, protoreflect.ValueOfInt32(int32(1000+fd.Number())))
		case protoreflect.DoubleKind:
			r.Set(fd, protoreflect.ValueOfFloat64(float64(fd.Number())+0.25))
		default:
			panic(fmt.Sprintf("fillAll: field %s of kind %v", fd.FullName(), fd.Kind()))
		}
	}
}

// sameByName reports each field of req (except skip) whose value differs
// from obj's field of the same name.
func sameByName(req, obj proto.Message, skip ...string) []string {
	var d []string
	r, o := req.ProtoReflect(), obj.ProtoReflect()
	r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if strings.Contains(" "+strings.Join(skip, " ")+" ", " "+string(fd.Name())+" ") {
			return true
		}
		of := o.Descriptor().Fields().ByName(fd.Name())
		switch {
		case of == nil:
			d = append(d, fmt.Sprintf("%s: no such field in %s", fd.Name(), o.Descriptor().Name()))
		case !o.Has(of) || !o.Get(of).Equal(v):
			d = append(d, fmt.Sprintf("%s: sent %v, stored %v", fd.Name(), v, o.Get(of)))
		}
		return true
	})
	return d
}

// TestRequestsSetEveryFieldByName: every field of every Create/Update
// request lands on the object's field of the same name. The requests number
// their fields differently from the objects (wire facts), so a server that
// copied by number would put every value one field off.
func TestRequestsSetEveryFieldByName(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx := t.Context()

	// parent_session_id must name a session (the real foreign key), so
	// the create and the update each name one that exists.
	parents := make([]string, 2)
	for i := range parents {
		p, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: fmt.Sprint("parent-", i)})
		if err != nil {
			t.Fatal(err)
		}
		parents[i] = p.GetMetadata().GetId()
	}
	cs := &ambientv1.CreateSessionRequest{}
	fillAll(cs)
	cs.ParentSessionId = proto.String(parents[0])
	s, err := c.CreateSession(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	us := &ambientv1.UpdateSessionRequest{Id: id}
	fillAll(us, "id")
	us.LlmModel = proto.String("updated") // differs from the create's value
	us.ParentSessionId = proto.String(parents[1])
	us2, err := c.UpdateSession(ctx, us)
	if err != nil {
		t.Fatal(err)
	}

	cp := &ambientv1.CreateProjectRequest{}
	fillAll(cp, "name")
	cp.Name = "every-field"
	p, err := c.CreateProject(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	up := &ambientv1.UpdateProjectRequest{Id: "every-field"}
	fillAll(up, "id", "name")
	up2, err := c.UpdateProject(ctx, up)
	if err != nil {
		t.Fatal(err)
	}

	// project_id must name a project (the real foreign key), so the
	// create and the update each name one that exists.
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "moved-to"}); err != nil {
		t.Fatal(err)
	}
	cps := &ambientv1.CreateProjectSettingsRequest{}
	fillAll(cps)
	cps.ProjectId = "every-field"
	ps, err := c.CreateProjectSettings(ctx, cps)
	if err != nil {
		t.Fatal(err)
	}
	ups := &ambientv1.UpdateProjectSettingsRequest{Id: ps.GetMetadata().GetId()}
	fillAll(ups, "id")
	ups.ProjectId = proto.String("moved-to")
	ps2, err := c.UpdateProjectSettings(ctx, ups)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		req, obj proto.Message
	}{
		{"CreateSession", cs, s}, {"UpdateSession", us, us2},
		{"CreateProject", cp, p}, {"UpdateProject", up, up2},
		{"CreateProjectSettings", cps, ps}, {"UpdateProjectSettings", ups, ps2},
	} {
		// created_by_user_id is the creator's identity, never the
		// request's (TestCreatedByIsTheCaller).
		if d := sameByName(tc.req, tc.obj, "id", "created_by_user_id"); len(d) > 0 {
			t.Errorf("%s:\n  %s", tc.name, strings.Join(d, "\n  "))
		}
	}
	if s.CreatedByUserId != nil || us2.CreatedByUserId != nil {
		t.Errorf("created_by_user_id %q after the create, %q after the update; the service token sets none", s.GetCreatedByUserId(), us2.GetCreatedByUserId())
	}
}

// TestGRPCErrorsLikeTheRealServer: the same validation and reasons as over
// REST, as gRPC codes. The project name rule lives in the real server's
// service layer, shared by REST and gRPC (upstream source; gRPC not
// measured).
func TestGRPCErrorsLikeTheRealServer(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx := t.Context()
	for _, name := range []string{"taken", "other", "renamed"} {
		if _, err := c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	// "renamed" (the id) is now named "fresh": the name is taken, the id
	// is not.
	if _, err := c.Projects().UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: "renamed", Name: proto.String("fresh")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ProjectSettings().CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "taken"}); err != nil {
		t.Fatal(err)
	}
	otherSettings, err := c.ProjectSettings().CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "other"})
	if err != nil {
		t.Fatal(err)
	}
	// The generated clients, not apiclient's wrappers: the message is
	// compared whole.
	type errCase struct {
		name   string
		call   func() error
		code   codes.Code
		reason string
	}
	tests := []errCase{
		{"project name with capitals", func() error {
			_, err := c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "Team_A"})
			return err
		}, codes.InvalidArgument, "project name must match DNS-1123 label format: lowercase alphanumeric and hyphens, must start with a letter and end with an alphanumeric character"},
		{"one-letter project", func() error {
			_, err := c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "p"})
			return err
		}, codes.InvalidArgument, "project name must be between 2 and 63 characters"},
		{"project without name", func() error {
			_, err := c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{})
			return err
		}, codes.InvalidArgument, "name is required"},
		{"session without name", func() error {
			_, err := c.Sessions().CreateSession(ctx, &ambientv1.CreateSessionRequest{Prompt: proto.String("x")})
			return err
		}, codes.InvalidArgument, "name is required"},
		{"settings without project", func() error {
			_, err := c.ProjectSettings().CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{})
			return err
		}, codes.InvalidArgument, "project_id is required"},
		{"project renamed to an invalid name", func() error {
			_, err := c.Projects().UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: "taken", Name: proto.String("Team_A")})
			return err
		}, codes.InvalidArgument, "project name must match DNS-1123 label format: lowercase alphanumeric and hyphens, must start with a letter and end with an alphanumeric character"},
		{"duplicate project", func() error {
			_, err := c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "taken"})
			return err
		}, codes.AlreadyExists, "This Project already exists"},
		// The real server's unique indexes (projects.name,
		// project_settings.project_id; read from its migrations). An
		// update onto a taken key has the reason of rh-trex's
		// HandleUpdateError, a create that of HandleCreateError.
		{"project renamed to a taken name", func() error {
			_, err := c.Projects().UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: "other", Name: proto.String("taken")})
			return err
		}, codes.AlreadyExists, "Changes to Project conflict with existing records"},
		{"settings moved to a project that has some", func() error {
			_, err := c.ProjectSettings().UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{
				Id: otherSettings.GetMetadata().GetId(), ProjectId: proto.String("taken")})
			return err
		}, codes.AlreadyExists, "Changes to ProjectSettings conflict with existing records"},
		{"project named as another was renamed to", func() error {
			_, err := c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "fresh"})
			return err
		}, codes.AlreadyExists, "This Project already exists"},
		{"second settings of a project", func() error {
			_, err := c.ProjectSettings().CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "taken"})
			return err
		}, codes.AlreadyExists, "This ProjectSettings already exists"},
		{"unknown session", func() error {
			_, err := c.Sessions().GetSession(ctx, &ambientv1.GetSessionRequest{Id: "nope"})
			return err
		}, codes.NotFound, "Session with id='nope' not found"},
		{"unknown project", func() error {
			_, err := c.Projects().GetProject(ctx, &ambientv1.GetProjectRequest{Id: "nope"})
			return err
		}, codes.NotFound, "Project with id='nope' not found"},
		{"unknown settings", func() error {
			_, err := c.ProjectSettings().UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: "nope"})
			return err
		}, codes.NotFound, "ProjectSettings with id='nope' not found"},
	}
	// The handlers' own checks before any lookup (rh-trex's grpcutil, read
	// from the code): an empty id, and a required string over 255 bytes.
	const idRequired = "id is required"
	noID := map[string]func() error{
		"GetSession": func() error { _, err := c.Sessions().GetSession(ctx, &ambientv1.GetSessionRequest{}); return err },
		"UpdateSession": func() error {
			_, err := c.Sessions().UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Prompt: proto.String("x")})
			return err
		},
		"UpdateSessionStatus": func() error {
			_, err := c.Sessions().UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{})
			return err
		},
		"DeleteSession": func() error { _, err := c.Sessions().DeleteSession(ctx, &ambientv1.DeleteSessionRequest{}); return err },
		"GetProject":    func() error { _, err := c.Projects().GetProject(ctx, &ambientv1.GetProjectRequest{}); return err },
		"UpdateProject": func() error { _, err := c.Projects().UpdateProject(ctx, &ambientv1.UpdateProjectRequest{}); return err },
		"DeleteProject": func() error { _, err := c.Projects().DeleteProject(ctx, &ambientv1.DeleteProjectRequest{}); return err },
		"GetProjectSettings": func() error {
			_, err := c.ProjectSettings().GetProjectSettings(ctx, &ambientv1.GetProjectSettingsRequest{})
			return err
		},
		"UpdateProjectSettings": func() error {
			_, err := c.ProjectSettings().UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{})
			return err
		},
		"DeleteProjectSettings": func() error {
			_, err := c.ProjectSettings().DeleteProjectSettings(ctx, &ambientv1.DeleteProjectSettingsRequest{})
			return err
		},
	}
	for name, call := range noID {
		tests = append(tests, errCase{name + " without id", call, codes.InvalidArgument, idRequired})
	}
	tests = append(tests, errCase{"session name over 255 bytes", func() error {
		_, err := c.Sessions().CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: strings.Repeat("n", 256)})
		return err
	}, codes.InvalidArgument, "name exceeds maximum length of 255"},
		errCase{"settings project_id over 255 bytes", func() error {
			_, err := c.ProjectSettings().CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: strings.Repeat("p", 256)})
			return err
		}, codes.InvalidArgument, "project_id exceeds maximum length of 255"})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(tc.call())
			if st.Code() != tc.code || st.Message() != tc.reason {
				t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.reason)
			}
		})
	}
	if _, err := c.Sessions().CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: strings.Repeat("n", 255)}); err != nil {
		t.Errorf("session name of 255 bytes refused: %v", err)
	}
	for _, name := range []string{"ab", "a1", "team-a", "kube-system", "default", strings.Repeat("a", 63)} {
		if _, err := c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: name}); err != nil {
			t.Errorf("valid project name %q refused: %v", name, err)
		}
	}
	// The refused rename changed nothing; a valid one keeps the id.
	if p, err := c.GetProject(ctx, "taken"); err != nil || p.GetName() != "taken" {
		t.Fatalf("after the refused rename: %v, %v; want the name taken", p, err)
	}
	p, err := c.Projects().UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: "taken", Name: proto.String("renamed")})
	if err != nil || p.GetMetadata().GetId() != "taken" || p.GetName() != "renamed" {
		t.Fatalf("valid rename: %v, %v; want id taken, name renamed", p, err)
	}
}
