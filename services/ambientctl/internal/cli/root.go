// Package cli implements the ambientctl commands. Every command talks to real
// endpoints: the ambient API over gRPC (and over REST for session start and
// stop, which have no RPC and whose phase guards live in the server), NATS
// for the event stream, the agui-proxy for chat and event-tally for tallies.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/restapi"
	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Defaults match the dev stack started by `make run`.
const (
	DefaultAPIAddr  = "localhost:8001"
	DefaultRESTURL  = apiclient.DefaultRESTURL
	DefaultToken    = "dev-token"
	DefaultNATSURL  = "nats://127.0.0.1:4222"
	DefaultProxyURL = "http://127.0.0.1:9080"
	DefaultTallyURL = "http://127.0.0.1:9094"
)

// Environment variables that override the defaults (flags override both).
const (
	EnvAPIAddr    = apiclient.EnvGRPCAddr
	EnvRESTURL    = apiclient.EnvRESTURL   // REST base URL for sessions start/stop
	EnvServerURL  = apiclient.EnvServerURL // the upstream name, read when EnvRESTURL is unset
	EnvToken      = apiclient.EnvAPIToken
	EnvTokenFile  = EnvToken + envconfig.FileSuffix // a file holding the token, as the services read it
	EnvUseTLS     = apiclient.EnvGRPCUseTLS
	EnvCAFile     = apiclient.EnvGRPCCAFile
	EnvNATSURL    = bus.EnvNATSURL
	EnvProxyURL   = "AMBIENT_PROXY_URL"
	EnvProxyToken = "AMBIENT_PROXY_TOKEN"
	EnvTallyURL   = "AMBIENT_TALLY_URL"
)

// LookupEnv is os.LookupEnv's shape, injected so tests control the
// environment.
type LookupEnv func(string) (string, bool)

type options struct {
	api  string
	rest string
	// restEnv is the variable --rest's default came from: EnvRESTURL, or
	// EnvServerURL when only the upstream name is set.
	restEnv    string
	token      string
	useTLS     bool
	caFile     string
	natsURL    string
	proxyURL   string
	proxyToken string
	tallyURL   string
	output     string
	timeout    time.Duration
	verbose    bool
	// export is what the OTEL_* variables ask to export (telemetry.LoadEnv).
	export telemetry.Export
	// trace is the running command's trace, set by startTrace.
	trace *commandTrace
}

// lookupSet is lookup with an empty value counted as unset, as envconfig
// counts it.
func lookupSet(lookup LookupEnv, name string) (string, bool) {
	v, ok := lookup(name)
	return v, ok && v != ""
}

func envOr(lookup LookupEnv, name, def string) string {
	if v, ok := lookupSet(lookup, name); ok {
		return v
	}
	return def
}

// Execute runs ambientctl with args and returns the process exit code: 0 on
// success, 1 on a failed command, 2 on a usage error.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer, lookup LookupEnv) int {
	root, o := newRoot(lookup)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	o.finishTrace(ctx, err, stderr)
	if err == nil {
		return 0
	}
	var uerr usageError
	if errors.As(err, &uerr) || cmd == nil || !cmd.Runnable() {
		fmt.Fprintf(stderr, "ambientctl: %v\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "ambientctl: %v\n", err)
	return 1
}

type usageError struct{ error }

func newRoot(lookup LookupEnv) (*cobra.Command, *options) {
	o := &options{}
	root := &cobra.Command{
		Use:           "ambientctl",
		Short:         "Drive the ambient control plane (sessions, projects, events, chat)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	// The OTEL_* variables, the token (which may come from a file) and the
	// TLS switch are parsed as they are read, by the services' loaders; a
	// bad one is reported when a command runs, with the other settings.
	l := envconfig.New(envconfig.LookupFunc(lookup))
	o.export = telemetry.LoadEnv(l)
	token := l.Secret(EnvToken).Reveal()
	if token == "" {
		token = DefaultToken
	}
	useTLS := l.Bool(EnvUseTLS, false)
	envErr := l.Err()
	o.restEnv = EnvRESTURL
	if _, ok := lookupSet(lookup, EnvRESTURL); !ok {
		if _, ok := lookupSet(lookup, EnvServerURL); ok {
			o.restEnv = EnvServerURL
		}
	}

	pf := root.PersistentFlags()
	pf.StringVar(&o.api, "api", envOr(lookup, EnvAPIAddr, DefaultAPIAddr), "ambient API gRPC address ($"+EnvAPIAddr+")")
	pf.StringVar(&o.rest, "rest", envOr(lookup, EnvRESTURL, envOr(lookup, EnvServerURL, DefaultRESTURL)),
		"ambient API REST base URL, for sessions start and stop ($"+EnvRESTURL+", else $"+EnvServerURL+")")
	// No default shown: the token is a secret, and --help must not print it.
	pf.StringVar(&o.token, "token", "", "ambient API bearer token (default $"+EnvToken+", or the content of the file $"+EnvTokenFile+", else "+DefaultToken+", the dev stack's)")
	pf.BoolVar(&o.useTLS, "tls", useTLS, "use TLS to the API ($"+EnvUseTLS+")")
	pf.StringVar(&o.caFile, "ca-file", envOr(lookup, EnvCAFile, ""), "CA bundle for API TLS ($"+EnvCAFile+")")
	pf.StringVar(&o.natsURL, "nats", envOr(lookup, EnvNATSURL, DefaultNATSURL), "NATS URL for events tail and dlq ($"+EnvNATSURL+")")
	pf.StringVar(&o.proxyURL, "proxy", envOr(lookup, EnvProxyURL, DefaultProxyURL), "agui-proxy base URL for chat and follow ($"+EnvProxyURL+")")
	// The default is filled in after parsing, like --token's: as a flag
	// default --help would print the secret.
	pf.StringVar(&o.proxyToken, "proxy-token", "", "bearer token for the agui-proxy (default $"+EnvProxyToken+")")
	proxyToken := envOr(lookup, EnvProxyToken, "")
	pf.StringVar(&o.tallyURL, "tally-url", envOr(lookup, EnvTallyURL, DefaultTallyURL), "event-tally base URL ($"+EnvTallyURL+")")
	pf.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&o.timeout, "timeout", 30*time.Second, "timeout of each API call")
	pf.BoolVarP(&o.verbose, "verbose", "v", false, "print the command's trace id (and telemetry export errors) on stderr")

	// A bad setting is a usage error of every command, reported before the
	// command touches the network rather than as an endpoint that "cannot
	// be reached" (or silently replaced by a default). Then every command
	// runs in a trace of its own.
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if cmd.HasSubCommands() {
			return nil // a group only shows its help: nothing to check or trace
		}
		if !cmd.Flags().Changed("token") {
			o.token = token
		}
		if !cmd.Flags().Changed("proxy-token") {
			o.proxyToken = proxyToken
		}
		if err := errors.Join(nameFlags(envErr), o.checkSettings()); err != nil {
			return usageError{err}
		}
		return o.startTrace(cmd)
	}
	root.AddCommand(sessionsCmd(o), projectsCmd(o), settingsCmd(o), eventsCmd(o), dlqCmd(o), chatCmd(o), followCmd(o), tallyCmd(o))
	for _, c := range root.Commands() {
		argsAreUsage(c)
	}
	return root, o
}

// argsAreUsage makes wrong arguments a usage error (exit 2) in cmd and the
// commands under it. Cobra returns a plain error for a wrong argument
// count (exit 1, as if the command had failed), and answers an unknown
// subcommand of a group (`sessions stat ID`) with the group's help and
// success, so a script's typo looked done. A group alone still shows its
// help. The root is left alone: cobra refuses its unknown commands, and it
// is not runnable, which Execute counts as a usage error.
func argsAreUsage(cmd *cobra.Command) {
	if cmd.HasSubCommands() {
		for _, c := range cmd.Commands() {
			argsAreUsage(c)
		}
		cmd.Args = func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
			if s := c.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return usageError{errors.New(msg)}
		}
		cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
		return
	}
	check := cmd.Args
	if check == nil {
		return
	}
	cmd.Args = func(c *cobra.Command, args []string) error {
		if err := check(c, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// client connects to the API. The caller closes it.
func (o *options) client() (*apiclient.Client, error) {
	c, err := apiclient.New(apiclient.Config{Addr: o.api, Token: o.token, UseTLS: o.useTLS, CAFile: o.caFile, Timeout: o.timeout, TracerProvider: o.tracerProvider()})
	if err != nil {
		return nil, fmt.Errorf("api client: %w", err)
	}
	return c, nil
}

// withClient runs fn with an API client closed afterwards.
func (o *options) withClient(fn func(c *apiclient.Client) error) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	defer c.Close() //nolint:errcheck // closing a client cannot lose data
	return fn(c)
}

// restClient returns the API's REST client (session start and stop).
func (o *options) restClient() (*apiclient.RESTClient, error) {
	c, err := apiclient.NewREST(apiclient.RESTConfig{URL: o.rest, Token: o.token, CAFile: o.caFile, Timeout: o.timeout, TracerProvider: o.tracerProvider()})
	if err != nil {
		return nil, usageError{fmt.Errorf("--rest (or $%s): %w", o.restEnv, err)}
	}
	return c, nil
}

// explainREST turns REST failures into messages that say what to do; a
// refused transition shows the server's reason.
func (o *options) explainREST(err error, what string) error {
	var e *restapi.Error
	if !errors.As(err, &e) {
		if errors.Is(err, restapi.ErrBadObject) {
			// A 2xx whose body is no session: the server (or whatever
			// answers at --rest) did take the call, so "cannot reach" would
			// send the user to start an API that is running.
			return fmt.Errorf("%s: the ambient API at %s answered, but its answer could not be read (see `ambientctl sessions get`): %w", what, o.rest, err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s: the ambient API at %s did not answer within %s", what, o.rest, o.timeout)
		}
		return fmt.Errorf("%s: cannot reach the ambient API's REST interface at %s (is it running? `make run` starts the dev stack; or pass --rest): %w", what, o.rest, err)
	}
	switch e.Status {
	case http.StatusConflict:
		return fmt.Errorf("%s: refused by the API: %s", what, e.Reason)
	case http.StatusNotFound:
		return fmt.Errorf("%s: not found: %s", what, e.Reason)
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%s: the ambient API rejected the token (set --token or $%s): %s", what, EnvToken, e.Reason)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// explain turns gRPC failures into messages that say what to do.
func (o *options) explain(err error, what string) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	// The server's own message: FromError of a wrapped status puts the
	// whole chain in Message ("get session x: rpc error: code = NotFound
	// desc = ..."), which repeated what and the code.
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) && gs.GRPCStatus() != nil {
		st = gs.GRPCStatus()
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("%s: cannot reach the ambient API at %s (is it running? `make run` starts the dev stack; or pass --api): %s", what, o.api, st.Message())
	case codes.Unauthenticated:
		return fmt.Errorf("%s: the ambient API rejected the token (set --token or $%s): %s", what, EnvToken, st.Message())
	case codes.NotFound:
		return fmt.Errorf("%s: not found: %s", what, st.Message())
	case codes.AlreadyExists:
		return fmt.Errorf("%s: already exists: %s", what, st.Message())
	case codes.InvalidArgument:
		return fmt.Errorf("%s: invalid argument: %s", what, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: the ambient API at %s did not answer within %s", what, o.api, o.timeout)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}
