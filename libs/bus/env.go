package bus

import "github.com/ambient-code/control-plane/libs/envconfig"

// Environment variables of a NATS connection, the same in every service.
const (
	EnvNATSURL       = "NATS_URL"
	EnvNATSCredsFile = "NATS_CREDS_FILE"
	EnvNATSUser      = "NATS_USER"
	EnvNATSPassword  = "NATS_PASSWORD"
	// EnvNATSPasswordFile names a file holding NATS_USER's password (a
	// mounted Secret key); preferred to NATS_PASSWORD, which every process
	// that can read this one's environment can read too.
	EnvNATSPasswordFile = "NATS_PASSWORD_FILE"
	EnvNATSToken        = "NATS_TOKEN"
	EnvNATSCAFile       = "NATS_CA_FILE"
	EnvNATSCertFile     = "NATS_CERT_FILE"
	EnvNATSKeyFile      = "NATS_KEY_FILE"
)

// DefaultURL is the NATS server of the dev stack.
const DefaultURL = "nats://127.0.0.1:4222"

// natsSchemes are the URL schemes nats.go dials.
var natsSchemes = []string{"nats", "tls", "ws", "wss"}

// LoadConnectConfig reads a NATS connection's variables through l
// (problems are recorded in l, each naming its variable). defaultURL is used
// when NATS_URL is unset; Name is left for the caller.
func LoadConnectConfig(l *envconfig.Loader, defaultURL string) ConnectConfig {
	return ConnectConfig{
		URL:          l.URLList(EnvNATSURL, defaultURL, natsSchemes...),
		CredsFile:    l.File(EnvNATSCredsFile, ""),
		User:         l.String(EnvNATSUser, ""),
		Password:     l.Secret(EnvNATSPassword).Reveal(),
		PasswordFile: l.File(EnvNATSPasswordFile, ""),
		Token:        l.Secret(EnvNATSToken).Reveal(),
		TLS: TLSConfig{
			CAFile:   l.File(EnvNATSCAFile, ""),
			CertFile: l.File(EnvNATSCertFile, ""),
			KeyFile:  l.File(EnvNATSKeyFile, ""),
		},
	}
}
