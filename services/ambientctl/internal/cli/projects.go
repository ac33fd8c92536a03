package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

func projectsCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "projects", Aliases: []string{"project", "p"}, Short: "Create and list projects"}
	var displayName, description string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a project (its id is its name)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &ambientv1.CreateProjectRequest{Name: args[0]}
			if displayName != "" {
				req.DisplayName = proto.String(displayName)
			}
			if description != "" {
				req.Description = proto.String(description)
			}
			return o.withClient(func(c *apiclient.Client) error {
				p, err := c.CreateProject(cmd.Context(), req)
				if err != nil {
					return o.explain(err, fmt.Sprintf("create project %q", args[0]))
				}
				return printOne(o, cmd, p, projectTable)
			})
		},
	}
	create.Flags().StringVar(&displayName, "display-name", "", "display name")
	create.Flags().StringVar(&description, "description", "", "description")
	list := &cobra.Command{
		Use:   "list",
		Short: "List projects",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.withClient(func(c *apiclient.Client) error {
				ps, err := c.ListProjects(cmd.Context())
				if err != nil {
					return o.explain(err, "list projects")
				}
				return printList(o, cmd, ps, projectTable)
			})
		},
	}
	cmd.AddCommand(create, list)
	return cmd
}

func projectTable(cmd *cobra.Command, ps []*ambientv1.Project) error {
	rows := make([][]string, 0, len(ps))
	for _, p := range ps {
		rows = append(rows, []string{p.GetMetadata().GetId(), orDash(p.GetDisplayName()), orDash(p.GetStatus())})
	}
	return printTable(cmd.OutOrStdout(), []string{"ID", "DISPLAY NAME", "STATUS"}, rows)
}

// groupAccess is one entry of ProjectSettings.group_access.
type groupAccess struct {
	Group string `json:"group"`
	Role  string `json:"role"`
}

func settingsCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "settings", Short: "Manage project settings"}
	var access []string
	var repositories string
	set := &cobra.Command{
		Use:   "set PROJECT",
		Short: "Create or replace a project's settings",
		Long:  "Create or replace a project's settings. --group-access GROUP=ROLE is repeatable and replaces the whole list.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			project := args[0]
			entries := make([]groupAccess, 0, len(access))
			for _, a := range access {
				g, r, ok := strings.Cut(a, "=")
				if !ok || g == "" || r == "" {
					return usageError{fmt.Errorf("--group-access wants GROUP=ROLE, got %q", a)}
				}
				entries = append(entries, groupAccess{Group: g, Role: r})
			}
			b, err := json.Marshal(entries)
			if err != nil {
				return fmt.Errorf("encode group access: %w", err)
			}
			return o.withClient(func(c *apiclient.Client) error {
				all, err := c.ListProjectSettings(cmd.Context())
				if err != nil {
					return o.explain(err, "list project settings")
				}
				var existing *ambientv1.ProjectSettings
				for _, s := range all {
					if s.GetProjectId() == project {
						existing = s
						break
					}
				}
				var out *ambientv1.ProjectSettings
				if existing == nil {
					req := &ambientv1.CreateProjectSettingsRequest{ProjectId: project, GroupAccess: proto.String(string(b))}
					if repositories != "" {
						req.Repositories = proto.String(repositories)
					}
					out, err = c.CreateProjectSettings(cmd.Context(), req)
				} else {
					req := &ambientv1.UpdateProjectSettingsRequest{Id: existing.GetMetadata().GetId(), GroupAccess: proto.String(string(b))}
					if repositories != "" {
						req.Repositories = proto.String(repositories)
					}
					out, err = c.UpdateProjectSettings(cmd.Context(), req)
				}
				if err != nil {
					what := fmt.Sprintf("set settings of project %q", project)
					if existing == nil && projectMissing(cmd.Context(), c, project) {
						// The API refuses settings of a missing project with
						// its database's foreign key error (a 500), which
						// does not say what to do.
						return fmt.Errorf("%s: no such project (create it first: ambientctl projects create %s)", what, project)
					}
					return o.explain(err, what)
				}
				if o.output == "json" {
					return printJSON(cmd.OutOrStdout(), out)
				}
				return printTable(cmd.OutOrStdout(), []string{"ID", "PROJECT", "GROUP ACCESS"},
					[][]string{{out.GetMetadata().GetId(), out.GetProjectId(), out.GetGroupAccess()}})
			})
		},
	}
	set.Flags().StringArrayVar(&access, "group-access", nil, "GROUP=ROLE (repeatable)")
	set.Flags().StringVar(&repositories, "repositories", "", "repositories JSON")
	cmd.AddCommand(set)
	return cmd
}

// projectMissing reports whether the API answers NotFound for project: a
// failed read for any other reason is not taken as an answer.
func projectMissing(ctx context.Context, c *apiclient.Client, project string) bool {
	_, err := c.GetProject(ctx, project)
	return status.Code(err) == codes.NotFound
}
