package memapi

import (
	"context"
	"fmt"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Kind and REST collection of the API's User objects (plugins/users of the
// real server: presenters.RegisterKind "User", RegisterPath "users").
const (
	kindUser  = "User"
	usersPath = "users"
)

// userService is ambient.v1 UserService: the API's User objects, which
// the real server stores like any other kind (plugins/users). They have
// nothing to do with the callers of memapi's multi-user mode (type User,
// users.go): creating one grants no token and no project.
//
// What it imitates, read from the real server's code (not measured): ids
// are fresh 27 character ids (KSUIDs there); a gRPC create needs username
// and name (InvalidArgument "username is required", then "name is
// required", each at most 255 bytes); a username may be taken twice (the
// users table has no unique index); an update sets the fields present,
// unchecked (an empty username included); a delete of an unknown id
// succeeds and is watched; CREATED/UPDATED/DELETED go through the shared
// broker like every kind.
type userService struct {
	ambientv1.UnimplementedUserServiceServer
	r *resource[*ambientv1.User]
}

var _ ambientv1.UserServiceServer = (*userService)(nil)

// Users returns the UserService implementation (the API's User objects)
// for in-process calls; see Sessions for the rules.
func (s *Server) Users() ambientv1.UserServiceServer {
	return &userService{r: s.userResource()}
}

func (s *Server) userResource() *resource[*ambientv1.User] {
	return &resource[*ambientv1.User]{
		s: s, st: s.apiUsers, kind: kindUser, path: usersPath,
		listMethod: ambientv1.UserService_ListUsers_FullMethodName,
		setMeta:    func(o *ambientv1.User, m *ambientv1.ObjectReference) { o.Metadata = m },
	}
}

func (x *userService) GetUser(_ context.Context, req *ambientv1.GetUserRequest) (*ambientv1.User, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	return x.r.get(req.GetId())
}

// CreateUser needs a username and a name, checked in that order as the
// real gRPC handler checks them; the rest is create. REST checks neither
// (its generated model only wants both keys present).
func (x *userService) CreateUser(_ context.Context, req *ambientv1.CreateUserRequest) (*ambientv1.User, error) {
	if err := checkRequired("username", req.GetUsername()); err != nil {
		return nil, err
	}
	if err := checkRequired("name", req.GetName()); err != nil {
		return nil, err
	}
	obj := &ambientv1.User{}
	if err := copyFields(obj, req, false); err != nil {
		return nil, errInternal(fmt.Errorf("create user: %w", err))
	}
	return x.create(obj)
}

// create stores obj (a create request's fields, see convertBody for REST)
// as a new user under a fresh id.
func (x *userService) create(obj *ambientv1.User) (*ambientv1.User, error) {
	return x.r.create(newID(), obj)
}

func (x *userService) UpdateUser(_ context.Context, req *ambientv1.UpdateUserRequest) (*ambientv1.User, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	return x.update(req)
}

// update sets the fields present in req (id selects the object), each as
// sent: the real handlers check none of them on an update.
func (x *userService) update(req *ambientv1.UpdateUserRequest) (*ambientv1.User, error) {
	return x.r.update(req.GetId(), func(obj *ambientv1.User) error {
		if err := copyFields(obj, req, false, "id"); err != nil {
			return errInternal(fmt.Errorf("update user: %w", err))
		}
		return nil
	})
}

func (x *userService) DeleteUser(_ context.Context, req *ambientv1.DeleteUserRequest) (*ambientv1.DeleteUserResponse, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	x.r.remove(req.GetId())
	return &ambientv1.DeleteUserResponse{}, nil
}

func (x *userService) ListUsers(_ context.Context, req *ambientv1.ListUsersRequest) (*ambientv1.ListUsersResponse, error) {
	items, meta := x.r.list(req.GetPage(), req.GetSize(), nil, nil)
	return &ambientv1.ListUsersResponse{Items: items, Metadata: meta}, nil
}

func (x *userService) WatchUsers(_ *ambientv1.WatchUsersRequest, stream ambientv1.UserService_WatchUsersServer) error {
	return watch(x.r.s, x.r.st, stream, func(typ ambientv1.EventType, obj *ambientv1.User, id string) *ambientv1.UserWatchEvent {
		return &ambientv1.UserWatchEvent{Type: typ, User: obj, ResourceId: id}
	})
}
