package bus

import (
	"sync"

	"github.com/nats-io/nats.go"
)

// Reconnects tells any number of waiters about the reconnects of one NATS
// connection. A KV watch that lives through a reconnect does not see what
// the server removed while the client was away (see KVWatch.Reopen), so
// watchers of buckets with expiring markers reopen their watch on it.
type Reconnects struct {
	mu   sync.Mutex
	next chan struct{} // guarded by mu; closed at the next reconnect, then replaced
}

// WatchReconnects returns the Reconnects of nc. It wraps nc's reconnect
// handler (the one set stays called first), so it belongs where nc is
// set up, once per connection.
func WatchReconnects(nc *nats.Conn) *Reconnects {
	r := &Reconnects{next: make(chan struct{})}
	prev := nc.ReconnectHandler()
	nc.SetReconnectHandler(func(c *nats.Conn) {
		if prev != nil {
			prev(c)
		}
		r.reconnected()
	})
	return r
}

// Next returns a channel closed at the connection's next reconnect (one
// after the call). A nil *Reconnects returns nil: a channel that never
// closes.
func (r *Reconnects) Next() <-chan struct{} {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next
}

func (r *Reconnects) reconnected() {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.next)
	r.next = make(chan struct{})
}
