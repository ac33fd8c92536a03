package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// abortResponse ends a response whose runner failed mid-body (crashed,
// closed its connection before the end of the body, sent a malformed chunk)
// so that the client sees the failure as it would directly, instead of a
// complete response: the bytes already written reach it, and then its
// transport fails. It must be the last thing done with the response.
//
// HTTP/1.x: the connection is hijacked and closed, so the chunked body
// never gets its terminating chunk (the client reads an unexpected EOF).
// httputil.ReverseProxy gets the same with panic(http.ErrAbortHandler); the
// project keeps panics out of handlers, and none is needed here.
//
// HTTP/2 cannot be hijacked. The proxy does not serve it (internal/app's
// http.Server has no TLS and does not enable unencrypted HTTP/2), so this
// only guards a future change: a write deadline in the past makes net/http's
// HTTP/2 server reset the stream at once (RST_STREAM INTERNAL_ERROR), which
// is what panic(http.ErrAbortHandler) would do. A writer that supports
// neither (a wrapper without Unwrap) returns http.ErrNotSupported, and the
// response ends as if complete.
func abortResponse(rc *http.ResponseController) error {
	// Bytes written but not flushed would be lost with the connection. A
	// failed flush means the client is gone; the abort is moot then.
	_ = rc.Flush()
	conn, _, err := rc.Hijack()
	if err == nil {
		if err := conn.Close(); err != nil {
			return fmt.Errorf("close hijacked connection: %w", err)
		}
		return nil
	}
	if !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("hijack: %w", err)
	}
	if err := rc.SetWriteDeadline(time.Unix(1, 0)); err != nil {
		return fmt.Errorf("reset stream: %w", err)
	}
	return nil
}
