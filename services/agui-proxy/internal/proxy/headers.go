package proxy

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/route"
)

// hopHeaders are connection-scoped (RFC 9110 section 7.6.1) and never
// forwarded in either direction.
func hopHeaders() []string {
	return []string{
		"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	}
}

func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders() {
		h.Del(k)
	}
}

// platformIdentityHeaders are the caller's identity as the platform's
// backend tells it to a runner: the platform's runner (ambient_runner's
// POST /) trusts them as set by that backend, and runs, attributes and
// asks for credentials as that user with that token. A client must not be
// able to set them through the proxy and speak as someone else.
func platformIdentityHeaders() []string {
	return []string{"X-Current-User-Id", "X-Current-User-Name", "X-Caller-Token"}
}

// upstreamHeader returns the headers sent to the runner: the client's,
// without hop-by-hop headers, without the client's credentials (the proxy
// authenticated them; runners never see them), without identity headers
// a runner would trust (platformIdentityHeaders) and without
// Accept-Encoding, so the stream is never compressed on its way through.
func upstreamHeader(in http.Header, ep route.Endpoint) http.Header {
	h := in.Clone()
	removeHopHeaders(h)
	// Expect: 100-continue was settled with the client; the body is complete.
	for _, k := range []string{"Authorization", "Cookie", "Accept-Encoding", "Expect"} {
		h.Del(k)
	}
	for _, k := range platformIdentityHeaders() {
		h.Del(k)
	}
	if ep.Stream && !namesProto(h) {
		// The stream routes are SSE (the original sent this Accept on
		// every events call): a client's */* (curl's default) or
		// text/html must not make a runner answer something else. The one
		// other encoding AG-UI defines is asked for by name and passes.
		h.Set("Accept", "text/event-stream")
	}
	if ep.Backend {
		// The backend's run path asks for SSE whatever the client named,
		// as the platform's backend does: the proxy reads the stream
		// itself, and nobody reads another encoding.
		h.Set("Accept", "text/event-stream")
	}
	return h
}

// namesProto reports whether an Accept header names AG-UI's binary
// encoding. It looks at every Accept line (a client may send several; the
// runner's server joins them) and ignores case, as media types do (RFC
// 9110, section 8.3.1) and as the official encoder's negotiation does:
// otherwise a client asking for the encoding in any other spelling would
// silently get SSE through the proxy and the binary encoding directly.
func namesProto(h http.Header) bool {
	for _, v := range h.Values("Accept") {
		if strings.Contains(strings.ToLower(v), aguiProtoMediaType) {
			return true
		}
	}
	return false
}

// aguiProtoMediaType is AG-UI's binary event encoding, which a client may
// negotiate with a runner instead of SSE.
const aguiProtoMediaType = "application/vnd.ag-ui.event+proto"

// isEventStream reports whether a Content-Type is SSE.
func isEventStream(contentType string) bool { return encodingOf(contentType) == encodingSSE }

// copyResponseHeader copies the runner's response headers to dst untouched
// (Content-Type included) except hop-by-hop and CORS ones, and adds the
// runner's Vary to the proxy's. Responses on streaming routes, whatever
// their Content-Type, and SSE responses on any route get the headers that
// keep intermediaries from buffering or caching them.
func copyResponseHeader(dst, src http.Header, stream bool) {
	for k, vv := range src {
		switch {
		case strings.HasPrefix(k, "Access-Control-"):
			// CORS is the proxy's policy (CORS_ALLOWED_ORIGIN), already in
			// dst: a runner's own headers (an AG-UI server allowing any
			// origin) would open the proxy to every web site.
			continue
		case k == "Vary":
			// dst holds the CORS handler's Vary: Origin; replaced, a shared
			// cache would give one origin's answer to another.
			dst[k] = append(dst[k], vv...)
			continue
		}
		dst[k] = append([]string(nil), vv...)
	}
	removeHopHeaders(dst)
	if stream {
		// A streamed body has no known length once chunks are relayed.
		dst.Del("Content-Length")
	}
	// Not only SSE: AG-UI's binary encoding (or whatever a runner sends) on
	// a streaming route is just as live, and a buffering proxy such as
	// nginx would hold its events back.
	if stream || isEventStream(src.Get("Content-Type")) {
		// A live stream is never cacheable, whatever the runner says: a
		// cache that kept it would replay old events to the next client.
		dst.Set("Cache-Control", "no-cache")
		dst.Set("X-Accel-Buffering", "no")
	}
}
