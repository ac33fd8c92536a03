// Package envconfig loads typed configuration from environment variables.
//
// A [Loader] reads variables through a lookup function (os.LookupEnv by
// default, a map in tests), converts each one to its type and records every
// problem instead of stopping at the first. [Loader.Err] returns all problems
// at once, joined with [errors.Join]; each is a [*VarError] naming the
// variable, the expected form and the value that was found, for example:
//
//	LOCAL_PORT_RANGE: want "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535, got "abc"
//
// A variable that is unset or set to the empty string takes its default;
// compose files and Helm charts often render unset values as "".
//
// Typical use in a service's internal/config package:
//
//	l := envconfig.New(nil)
//	cfg := Config{
//		NATSURL:   l.URL(EnvNATSURL, "nats://127.0.0.1:4222", "nats", "tls"),
//		AckWait:   l.Duration(EnvAckWait, 30*time.Second),
//		Ports:     l.PortRange(EnvPortRange, envconfig.PortRange{Low: 9100, High: 9199}),
//		Token:     l.Secret(EnvToken),
//	}
//	if err := l.Err(); err != nil {
//		return Config{}, fmt.Errorf("config: %w", err)
//	}
package envconfig
