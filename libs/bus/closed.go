package bus

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
)

// OnClosed calls fn once when nc is closed, with why: ErrClosed wrapping
// nc's last error. nats.go closes a connection for good, with no reconnect
// after it, on what it will not retry: the server refusing a protocol line
// (a subject longer than its max_control_line: "maximum control line
// exceeded") or an unknown server error. Nothing brings such a connection
// back, so a service must stop and be restarted. Drain and Close call fn
// too: the caller tells its own close apart (the service runtime stops
// listening before it drains). OnClosed wraps nc's closed handler (the one
// set stays called first), so it belongs where nc is set up, once per
// connection; for a connection already closed it calls fn at once. fn runs
// on nats.go's callback goroutine and must not block.
func OnClosed(nc *nats.Conn, fn func(err error)) {
	var once sync.Once
	call := func(c *nats.Conn) { once.Do(func() { fn(closedErr(c)) }) }
	prev := nc.ClosedHandler()
	nc.SetClosedHandler(func(c *nats.Conn) {
		if prev != nil {
			prev(c)
		}
		call(c)
	})
	if nc.IsClosed() { // closed before the handler was set: it never runs
		call(nc)
	}
}

// closedErr is ErrClosed with nc's last error, the cause of the close.
func closedErr(nc *nats.Conn) error {
	if err := nc.LastError(); err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return ErrClosed
}
