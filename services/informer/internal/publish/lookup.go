package publish

import (
	"context"
	"errors"
	"fmt"
)

// Lookup asks JetStream for the events stream and the objects bucket's
// stream (their info). It returns nil when both answered, else the
// lookups' errors joined: bus.StoreGone of it confirms that one of them
// is gone, which an operation's no-responders answer alone does not (see
// controller's goneError).
//
// Concurrent callers share one lookup (Publisher.lookups): an ambiguous
// answer comes to every worker of every resource at once (JetStream
// stopping while the connection stays up), and each would otherwise send
// its own requests and wait for them, up to its bound, in its publish
// path. The shared lookup runs with the deadline of the caller that
// started it but not its cancellation, so one caller giving up (its term
// ended) does not fail it for the others; each caller stops waiting when
// its own ctx ends. A caller that comes after a lookup ended starts a new
// one: an answer is never reused for a later error.
func (p *Publisher) Lookup(ctx context.Context) error {
	ch := p.lookups.DoChan("lookup", func() (any, error) {
		var cancel context.CancelFunc
		lctx := context.WithoutCancel(ctx)
		if d, ok := ctx.Deadline(); ok {
			lctx, cancel = context.WithDeadline(lctx, d)
		} else {
			lctx, cancel = context.WithTimeout(lctx, p.cfg.Timeout)
		}
		defer cancel()
		return nil, p.lookup(lctx)
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return fmt.Errorf("look up streams %s and %s: %w", p.cfg.Stream, p.kvStream, ctx.Err())
	}
}

// lookup is one Lookup.
func (p *Publisher) lookup(ctx context.Context) error {
	var errs []error
	for _, name := range []string{p.cfg.Stream, p.kvStream} {
		if _, err := p.js.Stream(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("look up stream %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
