package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// KV operation header of the objects bucket's delete and purge markers (the
// names nats.go's KeyValue writes and reads; it does not export them).
const (
	kvOpHeader = "KV-Operation"
	kvOpPurge  = "PURGE"
	kvOpDelete = "DEL"
)

// ErrKVConflict is wrapped by the error of an objects-bucket write the
// bucket refused because the key's last entry was not the revision
// expected, when the refusal could not be settled (see
// Publisher.kvConflict): the lease was not reconfirmed (the write is a
// deposed leader's: nothing is written), or the bucket refused the write
// again after the key was read. The write stays owed.
var ErrKVConflict = errors.New("the object's last kv entry is not the expected revision")

// Revisions is where a term keeps, per object id, the revision of the
// object's objects-bucket entry this leader knows (diff.Store): the
// expectation of the key's next write.
type Revisions interface {
	// KVRev returns the revision of id's last entry (0: none, or unknown).
	KVRev(id string) uint64
	// SetKVRev records rev as the revision of id's last entry, unless a
	// newer one is known (revisions are stream sequences: they only grow).
	SetKVRev(id string, rev uint64)
}

// Revs is one term's view of one resource's objects-bucket keys: the
// revisions it knows (Revisions) and the puts still in flight, whose ack
// brings the next revision. Every write of an object key expects the
// key's last revision (Nats-Expected-Last-Subject-Sequence on the bucket's
// stream), so a write must wait for the ack of the key's previous put
// (Revs.settled); puts of other keys are not waited for. Safe for
// concurrent use; per object, one write at a time (the work queue's
// guarantee).
type Revs struct {
	known    Revisions
	mu       sync.Mutex
	inflight map[string]*Put // guarded by mu; at most one per id
}

// NewRevs returns the tracking of one term's writes over known.
func NewRevs(known Revisions) *Revs {
	return &Revs{known: known, inflight: map[string]*Put{}}
}

// Put is a KV put sent without waiting for its ack (Publish). Its ack is
// awaited by whoever needs it first: the term's in-order check
// (controller.checkKV) or the object's next write, which needs the
// revision it brings.
type Put struct {
	revs *Revs
	id   string
	fut  jetstream.PubAckFuture
	done chan struct{} // closed once resolved
	err  error         // valid once done is closed
}

// Wait waits for the put's ack until ctx ends; the error is the put's
// (a refusal: wrongLastSeq) or ctx's. The ack's sequence becomes the
// key's known revision.
func (w *Put) Wait(ctx context.Context) error {
	// nats.go delivers the ack or the error once, to one receiver: that
	// one resolves the put, the others see done closed.
	select {
	case <-w.done:
	case ack := <-w.fut.Ok():
		w.resolve(ack.Sequence, nil)
	case err := <-w.fut.Err():
		w.resolve(0, err)
	case <-ctx.Done():
		return ctx.Err()
	}
	return w.err
}

func (w *Put) resolve(rev uint64, err error) {
	if err == nil {
		w.revs.known.SetKVRev(w.id, rev)
	}
	w.err = err
	w.revs.forget(w)
	close(w.done)
}

// track records w as id's put in flight.
func (r *Revs) track(w *Put) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight[w.id] = w
}

// forget drops w from the puts in flight (resolved, or no longer waited
// for).
func (r *Revs) forget(w *Put) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight[w.id] == w {
		delete(r.inflight, w.id)
	}
}

// settled waits for id's put in flight, if any, and returns the revision
// of id's last entry this leader knows. An error says that put failed or
// gave no answer within ctx: its outcome is unknown, and the revision is
// the one before it. An unanswered put is no longer waited for: the
// next write expects the revision before it, so of the two only one can
// land, and a refusal reads the key (kvConflict).
func (r *Revs) settled(ctx context.Context, id string) (uint64, error) {
	r.mu.Lock()
	w := r.inflight[id]
	r.mu.Unlock()
	if w != nil {
		if err := w.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				r.forget(w)
			}
			return r.known.KVRev(id), err
		}
	}
	return r.known.KVRev(id), nil
}

// settledWithin is settled for a write that must finish even if ctx
// ended (see Publish): it waits at most d, also after ctx ended; the
// context for it is made only when a put is in flight.
func (r *Revs) settledWithin(ctx context.Context, id string, d time.Duration) (uint64, error) {
	r.mu.Lock()
	w := r.inflight[id]
	r.mu.Unlock()
	if w == nil {
		return r.known.KVRev(id), nil
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	defer cancel()
	return r.settled(wctx, id)
}

// kvMsg is the objects-bucket message that writes value under key, or,
// value nil, removes the key: a purge with MarkerTTL (the marker and with
// it the key are gone after the TTL), a delete marker without one. These
// are the messages kv.Put, kv.Purge and kv.Delete send; sent here with
// the key's expected last revision (kv.Purge sends none for revision 0)
// and with the ack, whose sequence is the entry's revision.
func (p *Publisher) kvMsg(key string, value []byte) (*nats.Msg, []jetstream.PublishOpt) {
	m := &nats.Msg{Subject: p.kvSubjectPrefix + key, Data: value}
	if value != nil {
		return m, nil
	}
	m.Header = nats.Header{}
	if p.cfg.MarkerTTL <= 0 {
		m.Header.Set(kvOpHeader, kvOpDelete)
		return m, nil
	}
	m.Header.Set(kvOpHeader, kvOpPurge)
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	return m, []jetstream.PublishOpt{jetstream.WithMsgTTL(p.cfg.MarkerTTL)}
}

// sendKV writes value under key (nil: removes it, see kvMsg) expecting
// rev as the key's last revision, and returns the new entry's revision. A
// key too long to send is refused (checkSubject).
func (p *Publisher) sendKV(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if err := p.connected(); err != nil {
		return 0, err
	}
	m, opts := p.kvMsg(key, value)
	if err := checkSubject(m.Subject); err != nil {
		return 0, err
	}
	ack, err := p.js.PublishMsg(ctx, m, append(opts, jetstream.WithExpectStream(p.kvStream), jetstream.WithExpectLastSequencePerSubject(rev))...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// writeObject is the synchronous write of an object's entry: value under
// key (nil: removed), for the event at eventSeq (0: unknown), expecting
// the key's last revision revs knows once its put in flight, if any, is
// acked (writeKey). The new revision is recorded in revs.
func (p *Publisher) writeObject(ctx context.Context, revs *Revs, res eventsv1.Resource, id string, value []byte, eventSeq uint64) error {
	// A put in flight that failed or gave no answer: the expectation
	// below settles whether it landed.
	rev, _ := revs.settled(ctx, id)
	newRev, err := p.writeKey(ctx, res, events.ObjectKey(res, id), value, eventSeq, rev)
	if err != nil {
		return err
	}
	revs.known.SetKVRev(id, newRev)
	return nil
}

// writeKey writes value under key of the objects bucket (nil: removes
// it), for the event at eventSeq (0: unknown, or no object's key), after
// the lease check, expecting rev as the key's last revision; a refusal is
// settled by kvConflict. It returns the key's revision after the write.
func (p *Publisher) writeKey(ctx context.Context, res eventsv1.Resource, key string, value []byte, eventSeq, rev uint64) (uint64, error) {
	if err := p.fence(); err != nil {
		return 0, err
	}
	newRev, err := p.sendKV(ctx, key, value, rev)
	if wrongLastSeq(err) {
		newRev, err = p.kvConflict(ctx, res, key, value, eventSeq, rev, err)
	}
	return newRev, err
}

// kvConflict settles the bucket's refusal (cause) of a write of value
// under key (nil: its removal) for the event at eventSeq, which expected
// the key's last revision at expected, like conflict settles an event's:
// the lease is reconfirmed first (Config.Reconfirm; failing, the write is
// a deposed leader's: nothing is written, and the term ends), then the
// key's last entry is read. It returns the revision the key is at once
// the write counts as done:
//   - the entry is this very write (a put with the same event_seq, or the
//     same bytes; a removal finds a delete or purge marker, or nothing):
//     an earlier attempt whose ack was lost, counted as written;
//   - anything else (a previous leader's late write, a purge marker, an
//     entry of an older informer, written by an earlier term of this
//     leader's that it did not load) is written over once, expecting it;
//     a second refusal is returned (the write stays owed, and is retried
//     with backoff).
//
// As with events, the read only picks what the next write expects: the
// bucket checks it again, so the write lands right after the entry read.
func (p *Publisher) kvConflict(ctx context.Context, res eventsv1.Resource, key string, value []byte, eventSeq, expected uint64, cause error) (uint64, error) {
	if p.cfg.ObserveKVConflict != nil {
		p.cfg.ObserveKVConflict(ctx, res)
	}
	if p.cfg.Reconfirm == nil {
		return 0, fmt.Errorf("%w: expected revision %d: %w", ErrKVConflict, expected, cause)
	}
	if err := p.cfg.Reconfirm(ctx); err != nil {
		return 0, fmt.Errorf("%w: %w; lease not reconfirmed: %w", ErrKVConflict, cause, err)
	}
	last, err := p.lastKV(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("%w: %w; read the key's last entry: %w", ErrKVConflict, cause, err)
	}
	var rev uint64
	if last != nil {
		rev = last.Sequence
	}
	if p.written(last, value, eventSeq) {
		return rev, nil
	}
	newRev, err := p.sendKV(ctx, key, value, rev)
	if err != nil {
		return 0, fmt.Errorf("%w: expected revision %d, then %d: %w", ErrKVConflict, expected, rev, err)
	}
	return newRev, nil
}

// written reports whether last, a key's last entry (nil: none), is the
// write of value (nil: the key's removal) for the event at eventSeq.
func (p *Publisher) written(last *jetstream.RawStreamMsg, value []byte, eventSeq uint64) bool {
	if value == nil {
		return last == nil || last.Header.Get(kvOpHeader) != ""
	}
	if last == nil || last.Header.Get(kvOpHeader) != "" {
		return false
	}
	return bytes.Equal(last.Data, value) || (eventSeq != 0 && entryEventSeq(last.Data) == eventSeq)
}

// entryEventSeq is the event_seq of an objects-bucket entry (0: none, or
// not an entry).
func entryEventSeq(data []byte) uint64 {
	// Only the field is read; a full decode would do, at the cost of the
	// object's allocations.
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return 0
		}
		data = data[n:]
		if num == eventSeqField && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(data)
			if m < 0 {
				return 0
			}
			return v
		}
		m := protowire.ConsumeFieldValue(num, typ, data)
		if m < 0 {
			return 0
		}
		data = data[m:]
	}
	return 0
}

// eventSeqField is Object.event_seq's field number.
var eventSeqField = (&eventsv1.Object{}).ProtoReflect().Descriptor().Fields().ByName("event_seq").Number()

// lastKV returns the objects bucket's last message of key (nil: none).
func (p *Publisher) lastKV(ctx context.Context, key string) (*jetstream.RawStreamMsg, error) {
	return p.lastOf(ctx, &p.kvStreamH, p.kvStream, p.kvSubjectPrefix+key)
}
