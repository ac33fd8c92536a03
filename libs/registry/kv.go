package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
)

// Record is an endpoint with the KV revision it was read at.
type Record struct {
	Endpoint
	Revision uint64
}

// Claim creates the session's record, making ep.Owner its only owner. It
// returns the new revision, or [ErrClaimed] when a record already exists
// (whoever owns it; use [Get] to learn the owner), or [ErrInvalid].
// Safe for concurrent use; exactly one concurrent claimer wins.
func Claim(ctx context.Context, kv jetstream.KeyValue, ep Endpoint) (uint64, error) {
	b, err := encode(ep)
	if err != nil {
		return 0, err
	}
	rev, err := kv.Create(ctx, Key(ep.SessionID), b)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("claim session %s: %w", ep.SessionID, ErrClaimed)
		}
		return 0, fmt.Errorf("claim session %s: %w", ep.SessionID, err)
	}
	return rev, nil
}

// Register replaces the session's record if it is still at revision rev
// (compare-and-swap) and returns the new revision. Owners use it to publish
// the host, port, pid and state; a replica taking over a dead owner's session
// calls it with the stale record's revision so only one taker wins. It returns
// [ErrConflict] when the record changed (or was deleted) since rev, or
// [ErrInvalid].
func Register(ctx context.Context, kv jetstream.KeyValue, ep Endpoint, rev uint64) (uint64, error) {
	b, err := encode(ep)
	if err != nil {
		return 0, err
	}
	n, err := kv.Update(ctx, Key(ep.SessionID), b, rev)
	if err != nil {
		if isCASError(err) {
			return 0, fmt.Errorf("register session %s at revision %d: %w", ep.SessionID, rev, ErrConflict)
		}
		return 0, fmt.Errorf("register session %s: %w", ep.SessionID, err)
	}
	return n, nil
}

// Get returns the session's record, or [ErrNotFound], or [ErrInvalid] when the
// stored bytes are not a record.
func Get(ctx context.Context, kv jetstream.KeyValue, sessionID string) (Record, error) {
	e, err := kv.Get(ctx, Key(sessionID))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return Record{}, fmt.Errorf("get session %s: %w", sessionID, ErrNotFound)
		}
		return Record{}, fmt.Errorf("get session %s: %w", sessionID, err)
	}
	ep, err := Decode(e.Value())
	if err != nil {
		return Record{}, fmt.Errorf("get session %s: %w", sessionID, err)
	}
	return Record{Endpoint: ep, Revision: e.Revision()}, nil
}

// Release deletes the session's record if owner owns it (with opts: see
// [WithMarkerTTL]) and returns the revision of the record it deleted, so a
// watcher can tell the updates that came before the delete (0 when there
// was no record, or an undecodable one was purged). A missing record is not
// an error (release is idempotent). It returns [ErrNotOwner] when another
// owner holds the record, [ErrConflict] when the record changed between the
// read and the delete (retry reads it again), or [ErrInvalidOption].
func Release(ctx context.Context, kv jetstream.KeyValue, sessionID, owner string, opts ...Option) (uint64, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return 0, err
	}
	r, err := Get(ctx, kv, sessionID)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if errors.Is(err, ErrInvalid) {
		// An undecodable record has no owner we could check; nobody can use it.
		if err := o.remove(ctx, kv, Key(sessionID), 0); err != nil {
			return 0, fmt.Errorf("release invalid record of session %s: %w", sessionID, err)
		}
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("release: %w", err)
	}
	if r.Owner != owner {
		return 0, fmt.Errorf("release session %s (owner %s, not %s): %w", sessionID, r.Owner, owner, ErrNotOwner)
	}
	if err := o.remove(ctx, kv, Key(sessionID), r.Revision); err != nil {
		if isCASError(err) {
			return 0, fmt.Errorf("release session %s: %w", sessionID, ErrConflict)
		}
		return 0, fmt.Errorf("release session %s: %w", sessionID, err)
	}
	return r.Revision, nil
}

// List returns every session record in the bucket (undecodable ones are
// skipped), read with bus.ReadKV.
func List(ctx context.Context, kv jetstream.KeyValue) ([]Record, error) {
	es, err := bus.ReadKV(ctx, kv)
	if err != nil {
		return nil, fmt.Errorf("list runners: %w", err)
	}
	var out []Record
	for _, e := range es {
		if !isSessionKey(e.Key()) {
			continue
		}
		ep, err := Decode(e.Value())
		if err != nil {
			continue
		}
		out = append(out, Record{Endpoint: ep, Revision: e.Revision()})
	}
	return out, nil
}

// isCASError matches a lost compare-and-swap. ErrKeyExists covers R1 streams
// (code 10071) and ErrKeyRevisionMismatch replicated ones.
func isCASError(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) ||
		errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
}
