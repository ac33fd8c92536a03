package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

func sessionsCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "sessions", Aliases: []string{"session", "s"}, Short: "Create, list, start, stop and delete sessions"}
	cmd.AddCommand(sessionsCreateCmd(o), sessionsListCmd(o), sessionsGetCmd(o),
		sessionActionCmd(o, "start", "Start the session (phase Pending; allowed from no phase, Stopped, Failed, Completed)",
			(*apiclient.RESTClient).StartSession),
		sessionActionCmd(o, "stop", "Stop the session's runner (phase Stopping; allowed from Pending, Creating, Running)",
			(*apiclient.RESTClient).StopSession),
		sessionsDeleteCmd(o))
	return cmd
}

func sessionsCreateCmd(o *options) *cobra.Command {
	var (
		project, prompt, repoURL, model string
		timeout                         int32
		labels, env                     []string
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a session",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// 0 leaves the timeout to the server; a negative one was
			// dropped without a word.
			if err := nonNegative("--timeout-seconds", int(timeout), "the server's default"); err != nil {
				return err
			}
			req := &ambientv1.CreateSessionRequest{Name: args[0]}
			if project != "" {
				req.ProjectId = proto.String(project)
			}
			if prompt != "" {
				req.Prompt = proto.String(prompt)
			}
			if repoURL != "" {
				req.RepoUrl = proto.String(repoURL)
			}
			if model != "" {
				req.LlmModel = proto.String(model)
			}
			if timeout > 0 {
				req.Timeout = proto.Int32(timeout)
			}
			var err error
			if req.Labels, err = kvJSON("--label", labels); err != nil {
				return err
			}
			if req.EnvironmentVariables, err = kvJSON("--env", env); err != nil {
				return err
			}
			return o.withClient(func(c *apiclient.Client) error {
				s, err := c.CreateSession(cmd.Context(), req)
				if err != nil {
					return o.explain(err, "create session")
				}
				tagSession(cmd.Context(), s.GetMetadata().GetId(), s.GetProjectId())
				return printOne(o, cmd, s, sessionTable)
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&project, "project", "p", "", "project id")
	f.StringVar(&prompt, "prompt", "", "initial prompt")
	f.StringVar(&repoURL, "repo-url", "", "repository URL")
	f.StringVar(&model, "model", "", "LLM model (server default: sonnet)")
	f.Int32Var(&timeout, "timeout-seconds", 0, "session timeout in seconds")
	f.StringArrayVar(&labels, "label", nil, "label KEY=VALUE (repeatable)")
	f.StringArrayVar(&env, "env", nil, "environment variable KEY=VALUE for the runner (repeatable)")
	return cmd
}

// kvJSON turns KEY=VALUE flags into the JSON object string the API stores.
func kvJSON(flag string, pairs []string) (*string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("%s wants KEY=VALUE, got %q", flag, p)}
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", flag, err)
	}
	return proto.String(string(b)), nil
}

func sessionsListCmd(o *options) *cobra.Command {
	var project string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List sessions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.withClient(func(c *apiclient.Client) error {
				all, err := c.ListSessions(cmd.Context())
				if err != nil {
					return o.explain(err, "list sessions")
				}
				var out []*ambientv1.Session
				for _, s := range all {
					if project == "" || s.GetProjectId() == project {
						out = append(out, s)
					}
				}
				return printList(o, cmd, out, sessionTable)
			})
		},
	}
	cmd.Flags().StringVarP(&project, "project", "p", "", "only sessions of this project")
	return cmd
}

func sessionsGetCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show one session in full (JSON)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.withClient(func(c *apiclient.Client) error {
				s, err := c.GetSession(cmd.Context(), args[0])
				if err != nil {
					return o.explain(err, fmt.Sprintf("get session %q", args[0]))
				}
				return printJSON(cmd.OutOrStdout(), s)
			})
		},
	}
}

// sessionActionCmd calls the API's REST start or stop endpoint, so the
// server's phase guards apply (setting the phase over gRPC would skip them:
// a start of a Running session would set Pending under a live runner).
func sessionActionCmd(o *options, use, short string, call func(*apiclient.RESTClient, context.Context, string) (*ambientv1.Session, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.restClient()
			if err != nil {
				return err
			}
			s, err := call(c, tagSession(cmd.Context(), args[0], ""), args[0])
			if err != nil {
				return o.explainREST(err, fmt.Sprintf("%s session %q", use, args[0]))
			}
			return printOne(o, cmd, s, sessionTable)
		},
	}
}

func sessionsDeleteCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a session",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.withClient(func(c *apiclient.Client) error {
				// The API accepts deletes of unknown ids; check first so a typo
				// is reported instead of silently succeeding.
				if _, err := c.GetSession(cmd.Context(), args[0]); err != nil {
					return o.explain(err, fmt.Sprintf("delete session %q", args[0]))
				}
				if err := c.DeleteSession(cmd.Context(), args[0]); err != nil {
					return o.explain(err, fmt.Sprintf("delete session %q", args[0]))
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "session %s deleted\n", args[0])
				return err
			})
		},
	}
}

func sessionTable(cmd *cobra.Command, ss []*ambientv1.Session) error {
	rows := make([][]string, 0, len(ss))
	for _, s := range ss {
		rows = append(rows, []string{s.GetMetadata().GetId(), s.GetName(), orDash(s.GetProjectId()), orDash(s.GetPhase())})
	}
	return printTable(cmd.OutOrStdout(), []string{"ID", "NAME", "PROJECT", "PHASE"}, rows)
}
