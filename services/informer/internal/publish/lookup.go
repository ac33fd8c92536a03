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
func (p *Publisher) Lookup(ctx context.Context) error {
	var errs []error
	for _, name := range []string{p.cfg.Stream, p.kvStream} {
		if _, err := p.js.Stream(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("look up stream %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
