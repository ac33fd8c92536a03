package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/restapi"
	"github.com/ambient-code/control-plane/libs/telemetry"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// maxRESTBody bounds a REST answer the client reads.
const maxRESTBody = 16 << 20

// RESTConfig configures a RESTClient.
type RESTConfig struct {
	// URL is the server's base URL, e.g. http://localhost:8000 (the API's
	// /api/ambient/v1 is appended).
	URL string
	// Token is sent as "Authorization: Bearer <Token>"; "" sends nothing.
	Token string
	// CAFile (PEM) replaces the system roots for an https URL.
	CAFile string
	// Timeout bounds calls whose ctx has no deadline (0: DefaultTimeout).
	Timeout time.Duration
	// TracerProvider makes the span of every call (otelhttp), a child of
	// the call's ctx that sends it on as traceparent; nil uses the OTel
	// global, which telemetry.Setup installs.
	TracerProvider trace.TracerProvider
}

// LogValue redacts the token so a RESTConfig can be logged.
func (c RESTConfig) LogValue() slog.Value {
	tok := ""
	if c.Token != "" {
		tok = "REDACTED"
	}
	return slog.GroupValue(slog.String("url", c.URL), slog.String("token", tok), slog.String("ca_file", c.CAFile), slog.Duration("timeout", c.Timeout))
}

// RESTClient calls the ambient API's REST interface for what has no gRPC
// call: starting and stopping a session, with the server's phase guards.
// It is safe for concurrent use.
type RESTClient struct {
	base    string
	token   string
	timeout time.Duration
	hc      *http.Client
}

// NewREST validates cfg and returns a RESTClient (no connection is made).
// It returns an error wrapping ErrInvalidConfig for a URL that is not an
// absolute http(s) URL or an unreadable CA file.
func NewREST(cfg RESTConfig) (*RESTClient, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: REST URL %q: want http(s)://host[:port]", ErrInvalidConfig, cfg.URL)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: negative Timeout", ErrInvalidConfig)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: read CA file: %w", ErrInvalidConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrInvalidConfig, cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	return &RESTClient{
		base:    strings.TrimSuffix(u.String(), "/") + restapi.BasePath,
		token:   cfg.Token,
		timeout: cfg.Timeout,
		hc: &http.Client{
			Transport: otelhttp.NewTransport(tr, transportOpts(cfg.TracerProvider)...),
			// A redirect is answered, not followed: net/http would resend
			// the POST as a GET after a 301/302/303 (and take that GET's
			// 2xx for a done start or stop), and send the token on to
			// another port or scheme of the same host. do reports where
			// the server points.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// StartSession asks the server to start session id: POST
// /sessions/{id}/start, allowed from phase "", Stopped, Failed and
// Completed, which sets Pending. A refused start is a *restapi.Error with
// Status 409 and the server's reason.
func (c *RESTClient) StartSession(ctx context.Context, id string) (*ambientv1.Session, error) {
	return c.sessionAction(ctx, id, "start")
}

// StopSession asks the server to stop session id: POST /sessions/{id}/stop,
// allowed from Pending, Creating and Running, which sets Stopping. A
// refused stop is a *restapi.Error with Status 409 and the server's reason.
func (c *RESTClient) StopSession(ctx context.Context, id string) (*ambientv1.Session, error) {
	return c.sessionAction(ctx, id, "stop")
}

func (c *RESTClient) sessionAction(ctx context.Context, id, action string) (*ambientv1.Session, error) {
	// The call's span names the session it acts on.
	ctx = telemetry.ContextWithAttributes(ctx, telemetry.AttrResource.String(restapi.SessionsPath), telemetry.AttrObjectID.String(id))
	b, err := c.do(ctx, http.MethodPost, "/"+restapi.SessionsPath+"/"+url.PathEscape(id)+"/"+action)
	if err != nil {
		return nil, fmt.Errorf("%s session %s: %w", action, id, err)
	}
	s := &ambientv1.Session{}
	// A newer server may add fields: keep what this client knows.
	if err := (restapi.UnmarshalOptions{DiscardUnknown: true}).UnmarshalObject(b, s); err != nil {
		return nil, fmt.Errorf("%s session %s: decode answer: %w", action, id, err)
	}
	return s, nil
}

// do sends a request without a body and returns the answer of a 2xx. An
// error status is a *restapi.Error: the server's error object, or (for a
// body that is none, like the plain-text 401) Status and the body as Reason.
// A redirect is a *restapi.Error with its 3xx status naming the target.
func (c *RESTClient) do(ctx context.Context, method, path string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close() //nolint:errcheck // read-only body; nothing to lose
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRESTBody))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, req.URL.Redacted(), err)
	}
	if resp.StatusCode/100 == 2 {
		return b, nil
	}
	if loc, lerr := resp.Location(); lerr == nil {
		return nil, &restapi.Error{Status: resp.StatusCode, Reason: fmt.Sprintf(
			"the server redirects %s %s to %s; not followed (that would resend the token there, and turn a POST into a GET): use that URL as the REST base URL",
			method, req.URL.Redacted(), loc.Redacted())}
	}
	e := &restapi.Error{}
	if jerr := json.Unmarshal(b, e); jerr != nil || e.Kind != restapi.ErrorKind {
		e = &restapi.Error{Reason: shortReason(b)}
		if e.Reason == "" {
			e.Reason = http.StatusText(resp.StatusCode)
		}
	}
	e.Status = resp.StatusCode
	return nil, e
}

// maxReason bounds the reason made of an error answer that is no error
// object: at a wrong URL that is a proxy's or a web frontend's HTML page,
// which would otherwise end up whole in the error a user reads.
const maxReason = 1 << 10

// shortReason is body b as a reason: valid UTF-8, trimmed, and cut (at a
// rune boundary) after maxReason bytes, saying how long it was.
func shortReason(b []byte) string {
	s := strings.TrimSpace(string(bytes.ToValidUTF8(b, nil)))
	if len(s) <= maxReason {
		return s
	}
	cut := maxReason
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:cut], len(s))
}

// RESTStatus returns the HTTP status of a REST error answer in err's chain
// (0 when err holds none, e.g. the server was not reached).
func RESTStatus(err error) int {
	var e *restapi.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// transportOpts are the otelhttp options of the REST transport.
func transportOpts(tp trace.TracerProvider) []otelhttp.Option {
	if tp == nil {
		return nil
	}
	return []otelhttp.Option{otelhttp.WithTracerProvider(tp)}
}
