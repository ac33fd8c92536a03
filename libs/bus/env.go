package bus

import (
	"strings"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

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
	// EnvNATSTokenFile is NATS_TOKEN's file variant (envconfig.FileSuffix),
	// followed like NATS_PASSWORD_FILE (ConnectConfig.TokenFile); declared
	// for tools that read the names (the Helm chart sets it for an
	// external NATS with token auth).
	EnvNATSTokenFile = "NATS_TOKEN_FILE"
	EnvNATSCAFile    = "NATS_CA_FILE"
	EnvNATSCertFile  = "NATS_CERT_FILE"
	EnvNATSKeyFile   = "NATS_KEY_FILE"
)

// DefaultURL is the NATS server of the dev stack.
const DefaultURL = "nats://127.0.0.1:4222"

// natsSchemes are the URL schemes nats.go dials.
var natsSchemes = []string{"nats", "tls", "ws", "wss"}

// LoadConnectConfig reads a NATS connection's variables through l
// (problems are recorded in l, each naming its variable). defaultURL is used
// when NATS_URL is unset; Name is left for the caller.
func LoadConnectConfig(l *envconfig.Loader, defaultURL string) ConnectConfig {
	c := ConnectConfig{
		URL:          l.URLList(EnvNATSURL, defaultURL, natsSchemes...),
		CredsFile:    l.File(EnvNATSCredsFile, ""),
		User:         l.String(EnvNATSUser, ""),
		PasswordFile: l.File(EnvNATSPasswordFile, ""),
		Token:        l.Secret(EnvNATSToken).Reveal(),
		TokenFile:    l.SecretPath(EnvNATSToken),
		TLS: TLSConfig{
			CAFile:   l.CAFile(EnvNATSCAFile, ""),
			CertFile: l.File(EnvNATSCertFile, ""),
			KeyFile:  l.File(EnvNATSKeyFile, ""),
		},
	}
	// The token file was read (and checked, naming the variable) by
	// l.Secret; the connection keeps its path and follows it
	// (ConnectConfig.TokenFile), so a rotated Secret works without a
	// restart.
	if c.TokenFile != "" {
		c.Token = ""
	}
	// NATS_PASSWORD_FILE, too, is followed by the connection. With the file
	// set, NATS_PASSWORD is taken as it is, so that setting both is refused
	// by the config's validation.
	if c.PasswordFile == "" {
		c.Password = l.Secret(EnvNATSPassword).Reveal()
	} else {
		c.Password = l.String(EnvNATSPassword, "")
		// Read once here too, as the connection reads it
		// (envconfig.ReadSecretFile), so an empty file or a password with
		// a line break inside is a start-up error naming the variable, like
		// any other secret, not a failed connect that names none.
		if _, err := envconfig.ReadSecretFile(c.PasswordFile); err != nil {
			l.Invalid(EnvNATSPasswordFile, "a file holding the password (not empty, no control character inside)", c.PasswordFile, err)
		}
	}
	checkCredentials(l, c)
	return c
}

// checkCredentials records the combinations the connection refuses
// (ConnectConfig.validate) at load time, naming the variables: refused at
// connect time they read "password without user" and name none.
func checkCredentials(l *envconfig.Loader, c ConnectConfig) {
	var kinds []string
	if c.CredsFile != "" {
		kinds = append(kinds, EnvNATSCredsFile)
	}
	if c.User != "" || c.Password != "" || c.PasswordFile != "" {
		kinds = append(kinds, EnvNATSUser+"/"+EnvNATSPassword)
	}
	if c.Token != "" || c.TokenFile != "" {
		kinds = append(kinds, EnvNATSToken)
	}
	if len(kinds) > 1 {
		l.Invalid(kinds[len(kinds)-1], "unset when "+strings.Join(kinds[:len(kinds)-1], " or ")+" is set (one way to authenticate)", "a value", nil)
	}
	if (c.Password != "" || c.PasswordFile != "") && c.User == "" {
		l.Invalid(EnvNATSUser, "the user of "+EnvNATSPassword+" (or "+EnvNATSPasswordFile+")", "nothing", nil)
	}
	if c.Password != "" && c.PasswordFile != "" {
		l.Invalid(EnvNATSPassword, "unset when "+EnvNATSPasswordFile+" is set (one of the two)", "a value", nil)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		missing := EnvNATSKeyFile
		if c.TLS.CertFile == "" {
			missing = EnvNATSCertFile
		}
		l.Invalid(missing, "set with "+EnvNATSCertFile+" and "+EnvNATSKeyFile+" together (a client certificate and its key)", "nothing", nil)
	}
}
