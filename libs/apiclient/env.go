package apiclient

import "github.com/ambient-code/control-plane/libs/envconfig"

// Environment variables of the ambient API connection, the same in every
// service that calls the API.
const (
	EnvAPIToken = "AMBIENT_API_TOKEN"
	// EnvAPITokenFile is EnvAPIToken's file variant (envconfig.FileSuffix):
	// the path of a file holding the token, which the client follows when
	// the file is replaced (a rotated Secret). Spelled out so that tools
	// reading the declared names (deploy/deploytest) find it.
	EnvAPITokenFile = "AMBIENT_API_TOKEN_FILE"
	EnvGRPCAddr     = "AMBIENT_GRPC_SERVER_ADDR"
	EnvGRPCUseTLS   = "AMBIENT_GRPC_USE_TLS"
	EnvGRPCCAFile   = "AMBIENT_GRPC_CA_FILE"
)

// DefaultGRPCAddr is the API's gRPC address in the dev stack.
const DefaultGRPCAddr = "localhost:8001"

// REST base URL variables: EnvRESTURL is ours, EnvServerURL the upstream
// control plane's name for the same thing (read when EnvRESTURL is unset).
const (
	EnvRESTURL   = "AMBIENT_API_URL"
	EnvServerURL = "AMBIENT_API_SERVER_URL"
)

// DefaultRESTURL is the API's REST base URL in the dev stack (and the
// upstream default of AMBIENT_API_SERVER_URL).
const DefaultRESTURL = "http://localhost:8000"

// EnvConfig is the API connection as configured: the token stays redacted
// until Config reveals it for the client.
type EnvConfig struct {
	// Token is the token as read at load time.
	Token envconfig.Redacted
	// TokenFile is the token's file when it was given as one
	// (AMBIENT_API_TOKEN_FILE): the client follows it (Config.TokenFile).
	TokenFile string
	Addr      string
	UseTLS    bool
	CAFile    string
}

// LoadEnv reads the API connection's variables through l (problems are
// recorded in l, each naming its variable). The token is required, as
// AMBIENT_API_TOKEN or as the file AMBIENT_API_TOKEN_FILE; the file is read
// here too, so an unusable one stops the start naming the variable.
func LoadEnv(l *envconfig.Loader) EnvConfig {
	e := EnvConfig{
		Token:     l.RequiredSecret(EnvAPIToken),
		TokenFile: l.SecretPath(EnvAPIToken),
		Addr:      l.DialAddr(EnvGRPCAddr, DefaultGRPCAddr),
		UseTLS:    l.Bool(EnvGRPCUseTLS, false),
		CAFile:    l.CAFile(EnvGRPCCAFile, ""),
	}
	if e.CAFile != "" && !e.UseTLS {
		// A CA says the operator meant TLS; without it the token would go
		// in plain text while the CA was silently unused.
		l.Invalid(EnvGRPCCAFile, "unset unless "+EnvGRPCUseTLS+"=true (the CA verifies a TLS connection)", e.CAFile, nil)
	}
	return e
}

// Config is the client configuration of e (other fields at their
// defaults). A token given as a file is passed as TokenFile, so the client
// sends a rotated token without a restart.
func (e EnvConfig) Config() Config {
	c := Config{Addr: e.Addr, UseTLS: e.UseTLS, CAFile: e.CAFile}
	if e.TokenFile != "" {
		c.TokenFile = e.TokenFile
	} else {
		c.Token = e.Token.Reveal()
	}
	return c
}
