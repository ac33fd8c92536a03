package cli

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
)

// checkSettings checks the settings in use before any command runs. A
// flag's value is its variable's value (or the default) when the flag is
// not given, so checking the flags checks both. Each is checked by the
// loader the services read the same variable with, so ambientctl accepts
// exactly what they accept; the errors name the flag and the variable.
func (o *options) checkSettings() error {
	l := envconfig.New(envconfig.Map(map[string]string{
		EnvAPIAddr:  o.api,
		EnvToken:    o.token,
		EnvUseTLS:   strconv.FormatBool(o.useTLS),
		EnvCAFile:   o.caFile,
		o.restEnv:   o.rest,
		EnvNATSURL:  o.natsURL,
		EnvProxyURL: o.proxyURL,
		EnvTallyURL: o.tallyURL,
	}))
	// The loaders take an empty value as unset and return their default,
	// which is "" here: an empty flag would then fail later, at the network.
	for _, name := range []string{EnvAPIAddr, o.restEnv, EnvNATSURL, EnvProxyURL, EnvTallyURL} {
		l.Required(name)
	}
	apiclient.LoadEnv(l) // the gRPC address, the token (required) and the CA file
	// Only NATS_URL is set in l: the other NATS variables are not
	// ambientctl's, so they read as unset.
	bus.LoadConnectConfig(l, "")
	for _, name := range []string{o.restEnv, EnvProxyURL, EnvTallyURL} {
		l.URL(name, "", "http", "https")
	}
	return errors.Join(nameFlags(l.Err()), o.checkTimeout(), o.checkOutput())
}

// checkOutput refuses an --output no command knows, for every command:
// those that do not call the API (tally, dlq list) printed a table for
// "-o yaml" and succeeded.
func (o *options) checkOutput() error {
	if o.output == "table" || o.output == "json" {
		return nil
	}
	return &envconfig.VarError{Name: "--output", Want: "table or json", Got: o.output}
}

// nonNegative refuses a negative number flag, whose 0 means zero: the
// loops that take 0 as "no limit" stop at once on a negative one, so
// `events tail --count -1` printed nothing and succeeded.
func nonNegative(flag string, n int, zero string) error {
	if n >= 0 {
		return nil
	}
	return usageError{&envconfig.VarError{Name: flag, Want: "0 (" + zero + ") or more", Got: strconv.Itoa(n)}}
}

// checkTimeout refuses a --timeout that is not positive: every call is
// bounded by it, so zero or less would fail each one at once (as "did not
// answer within 0s", which blames the endpoint) instead of naming the flag.
func (o *options) checkTimeout() error {
	if o.timeout > 0 {
		return nil
	}
	return &envconfig.VarError{Name: "--timeout", Want: `a positive Go duration such as "30s"`, Got: o.timeout.String()}
}

// flagOf returns the flag (without "--") that overrides variable name, or
// "" when it has none.
func flagOf(name string) string {
	switch name {
	case EnvAPIAddr:
		return "api"
	case EnvRESTURL, EnvServerURL:
		return "rest"
	case EnvToken, EnvTokenFile:
		return "token"
	case EnvUseTLS:
		return "tls"
	case EnvCAFile:
		return "ca-file"
	case EnvNATSURL:
		return "nats"
	case EnvProxyURL:
		return "proxy"
	case EnvProxyToken:
		return "proxy-token"
	case EnvTallyURL:
		return "tally-url"
	default:
		return ""
	}
}

// nameFlags rewrites the problems in err (an envconfig.Loader's Err) that
// are about a variable with a flag so they name both, e.g.
// `--proxy (or $AMBIENT_PROXY_URL): want ..., got "..."`: the user may have
// set either.
func nameFlags(err error) error {
	var joined interface{ Unwrap() []error }
	if err == nil || !errors.As(err, &joined) {
		return err
	}
	errs := joined.Unwrap()
	named := make([]error, len(errs))
	for i, e := range errs {
		named[i] = e
		var ve *envconfig.VarError
		if errors.As(e, &ve) {
			if f := flagOf(ve.Name); f != "" {
				withFlag := *ve
				withFlag.Name = fmt.Sprintf("--%s (or $%s)", f, ve.Name)
				named[i] = &withFlag
			}
		}
	}
	return errors.Join(named...)
}
