// Package publish turns cache changes into JetStream messages and keeps the
// persisted cache (KV) in step: publish, wait for the stream's ack, then
// write KV, recording the event's stream sequence in the entry. A crash
// between the two leaves KV behind the stream; the next leader reads the
// stream after KV's position (Tail) and takes the newer states from there,
// so it neither publishes an event twice nor misses the delete of an object
// whose ADDED never reached KV. Events keep a Nats-Msg-Id (MsgID), so a
// publish retried after a lost ack is still dropped by JetStream.
//
// Each event is published expecting the stream sequence of the object's
// last event as its subject's last (server-side fencing, see Publish): a
// leader deposed while it had an event in hand cannot append it after its
// successor's newer ones. Each KV write of an object expects the
// revision of the key's last entry the same way (Revs, writeObject), so a
// deposed leader's late write cannot land over its successor's newer one.
package publish

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// DefaultTimeout bounds one publish or KV write whose ctx has no deadline.
const DefaultTimeout = 10 * time.Second

// DefaultStoreTimeout bounds the KV write that follows an ack.
const DefaultStoreTimeout = 2 * time.Second

// ErrInvalidConfig is returned by New for a Config it cannot use.
var ErrInvalidConfig = errors.New("invalid publisher config")

// ErrNotStored wraps the error of a KV write that failed after the event
// was acked: the event is in the stream, only KV lags behind.
var ErrNotStored = errors.New("event published, kv not updated")

// ErrUnpublishable wraps an error no retry can fix for this version of the
// object: NATS refuses its size, it does not encode, or its subject or KV
// key is over events.MaxSubjectLen (checkSubject). The caller must
// count the version as done, or it would block every later change of the
// object (issue 14: retried every 5 s forever).
var ErrUnpublishable = errors.New("event cannot be published")

// Config says where events go.
type Config struct {
	// Prefix is the subject prefix (events.SubjectPrefix, or the shadow one).
	Prefix string
	// Stream is the stream that must store the events; a publish that lands
	// anywhere else fails (a shadow informer can never feed the live stream).
	Stream string
	// Timeout bounds each publish and KV write whose ctx has no deadline
	// (default DefaultTimeout).
	Timeout time.Duration
	// StoreTimeout bounds the KV write after an ack, which runs even when
	// ctx has ended (default DefaultStoreTimeout). Keep it well below the
	// lease TTL: a leader that lost its lease must be done before another
	// one can start.
	StoreTimeout time.Duration
	// AfterPublish, when set, runs after the ack and before the KV write;
	// an error from it is returned as is and the KV write is skipped. Tests
	// use it to crash between the two.
	AfterPublish func(ctx context.Context, ev *eventsv1.ResourceEvent) error
	// MarkerTTL, when > 0, is how long the KV delete marker of a deleted
	// object stays before the server removes it (a purge with a per-message
	// TTL; the bucket needs LimitMarkerTTL). 0 keeps markers forever, which
	// makes the bucket grow with every object ever deleted.
	MarkerTTL time.Duration
	// TailMargin is how many sequences before the persisted cache's
	// position Tail reads (0: the TailMargin constant; tests make it small
	// to reach past it with a few events).
	TailMargin uint64
	// Fence, when set, is asked just before each publish and each KV write
	// of an object; an error from it is returned (wrapped) and nothing is
	// sent. The informer passes its lease's Elector.Confirmed, so a leader
	// resuming from a pause longer than the lease does not publish what it
	// had in hand after another replica took over (the events stream would
	// go back to an older state of the object).
	Fence func() error
	// Reconfirm, when set, is called when the stream refuses an event
	// because the object's last event is not the one the change expected
	// (ErrConflict), or the objects bucket refuses a write because the
	// key's last entry is not the revision expected (ErrKVConflict): it
	// must prove with a synchronous write that this replica still holds
	// the lease, and fail otherwise. The informer passes its lease's
	// Elector.Reconfirm, whose failure also ends the term. Only after it
	// succeeded does Publish read the subject's last event (or the key's
	// last entry) to settle the conflict (see Publish, kvConflict); nil:
	// every conflict is returned as an error wrapping ErrConflict (or
	// ErrKVConflict).
	Reconfirm func(ctx context.Context) error
	// ObserveKVConflict, when set, is told about each KV write of an
	// object of res the bucket refused for a wrong last revision
	// (metrics), before it is settled.
	ObserveKVConflict func(ctx context.Context, res eventsv1.Resource)
	// Observe, when set, is told about each acked event (metrics).
	Observe func(ctx context.Context, res eventsv1.Resource, typ eventsv1.EventType, took time.Duration, duplicate bool)
}

// Publisher publishes events and writes the objects bucket. It is safe for
// concurrent use; per object, callers publish one change at a time.
type Publisher struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	tracer trace.Tracer
	cfg    Config
	// kvSubjectPrefix and kvStream address the objects bucket for puts
	// sent without kv.Put (see putAsync).
	kvSubjectPrefix, kvStream string
	// stream is the events stream's handle once looked up (lastMsg).
	stream atomic.Pointer[jetstream.Stream]
	// kvStreamH is the objects bucket's stream handle once looked up
	// (lastKV).
	kvStreamH atomic.Pointer[jetstream.Stream]
	// lookups shares one Lookup among concurrent callers.
	lookups singleflight.Group
}

// New returns a Publisher; it returns ErrInvalidConfig without a prefix or
// stream.
func New(js jetstream.JetStream, kv jetstream.KeyValue, tracer trace.Tracer, cfg Config) (*Publisher, error) {
	if cfg.Prefix == "" || cfg.Stream == "" {
		return nil, fmt.Errorf("prefix and stream are required: %w", ErrInvalidConfig)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = DefaultStoreTimeout
	}
	if cfg.TailMargin == 0 {
		cfg.TailMargin = TailMargin
	}
	return &Publisher{js: js, kv: kv, tracer: tracer, cfg: cfg, kvSubjectPrefix: "$KV." + kv.Bucket() + ".", kvStream: "KV_" + kv.Bucket()}, nil
}

// Outcome says what Publish had to leave out.
type Outcome struct {
	// Omitted is what the event left out to fit the payload limit (see
	// events.NewMsgLimit).
	Omitted events.Omission
	// KVSkipped is set when the object is over the payload limit: KV keeps
	// the previous state of the object (consumers that read KV see the last
	// version that fitted, never a stub).
	KVSkipped bool
	// KV is the KV write still in flight, nil when there is none: the
	// caller must check its outcome (Put.Wait; a failure is an
	// ErrNotStored that comes late, a refusal included).
	KV *Put
	// Seq is the event's stream sequence once acked (also with
	// ErrNotStored): a retried KV write must record it (see Store).
	Seq uint64
	// LostAck is set when the stream refused the event because the
	// subject's last event was not the one expected, and that last event
	// was this very one (an earlier attempt whose ack was lost): it counts
	// as published, at Seq.
	LostAck bool
}

// ErrConflict is wrapped by Publish's error when the stream refused the
// event because its subject's last event is not the one the change
// expected (diff.Change.Seq), and the conflict could not be settled:
// Config.Reconfirm failed (the replica does not lead: it must stand down),
// or the last event is another publisher's (ConflictError).
var ErrConflict = errors.New("the object's last event in the stream is not the expected one")

// ConflictError is Publish's error when the stream refused the event
// because the subject's last event is not the one expected, the lease was
// reconfirmed, and that last event is not this one: another publisher's
// (a previous leader's, one of this leader's own older events whose ack
// was lost, a dead letter replayed for one consumer group), or none at
// all (aged out, purged). The caller adopts it as the object's published
// state (see Last; only its sequence when it tells no state) and
// publishes the change it then needs, expecting Last.
type ConflictError struct {
	// Expected is the sequence the event expected as its subject's last.
	Expected uint64
	// Last is the sequence of the subject's last message (0: none).
	Last uint64
	// last is that message; nil when there is none.
	last *jetstream.RawStreamMsg
	// cause is the stream's refusal.
	cause error
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%v: expected it at sequence %d, the stream has it at %d: %v", ErrConflict, e.Expected, e.Last, e.cause)
}

// Unwrap returns ErrConflict and the stream's refusal.
func (e *ConflictError) Unwrap() []error { return []error{ErrConflict, e.cause} }

// LastKind is what the subject's last event of a conflict tells about its
// object (Last).
type LastKind int

const (
	// LastUnknown: no such event, another object's, or a message no
	// informer published: only its sequence counts.
	LastUnknown LastKind = iota
	// LastPresent: the event gives the object's state (LastEvent.State).
	LastPresent
	// LastDeleted: the event deletes the object.
	LastDeleted
	// LastRef: the event tells no state but consumers have the object: a
	// reference event (over the payload limit), whose version is
	// LastEvent.Version, or a dead letter replayed for one consumer group,
	// a copy of an older ADDED or MODIFIED (Version "": the copy's is not
	// the object's). The caller adopts it with diff.Store.AdoptRef: the
	// object's next event is a MODIFIED, or nothing while the object is at
	// that version, never a second ADDED.
	LastRef
)

// LastEvent is what the subject's last event of a conflict tells about
// its object.
type LastEvent struct {
	Kind LastKind
	// State is the object's state (LastPresent).
	State events.Encoded
	// Version is the version a reference event names (LastRef; "" for a
	// replayed dead letter).
	Version string
}

// Last decodes, once, what the subject's last event (e.Last) tells about
// the object id of T.
func Last[T events.APIObject](e *ConflictError, id string) LastEvent {
	if e == nil || e.last == nil {
		return LastEvent{}
	}
	_, ev, err := events.Decode(context.Background(), e.last.Header, e.last.Data)
	if (err != nil && !errors.Is(err, events.ErrObjectTooLarge)) || ev.GetResource() != events.ResourceOf[T]() || ev.GetObjectId() != id {
		return LastEvent{}
	}
	switch {
	case ev.GetType() == eventsv1.EventType_EVENT_TYPE_DELETED:
		if replayed(e.last.Header) {
			return LastEvent{} // a copy of an older delete: the state before it stands
		}
		return LastEvent{Kind: LastDeleted}
	case replayed(e.last.Header):
		return LastEvent{Kind: LastRef}
	case err != nil: // a reference event
		return LastEvent{Kind: LastRef, Version: ev.GetVersion()}
	}
	obj, ok := events.Unwrap[T](ev.GetObject())
	if !ok {
		return LastEvent{}
	}
	state, err := events.Encode(obj)
	if err != nil {
		return LastEvent{}
	}
	return LastEvent{Kind: LastPresent, State: state}
}

// Publish publishes the event for c, waits for the ack, then stores the new
// state in KV (or deletes it for DELETED). The event is built from the
// encoded states, without decoding or marshalling the objects again, and
// fits the server's payload limit whatever the object's size (an event
// over it is rebuilt by events.NewMsgLimit). It starts a producer span
// whose context travels in the message headers. When only the KV write
// fails the error wraps ErrNotStored: the caller must count the event as
// published and retry the write with Store. An error wrapping
// ErrUnpublishable is final for this version.
//
// Fencing: the event is published expecting c.Seq as the sequence of its
// subject's last message (Nats-Expected-Last-Subject-Sequence; 0: no
// message, which the server enforces too). A leader deposed while it had
// the event in hand (paused past the lease TTL between its Fence check and
// the send) is refused once its successor published the object, and the
// stream keeps the newer state. A refusal is settled by conflict. The KV
// write expects the revision of the key's last entry revs knows, once
// the object's previous put, if still in flight, is acked (only that one
// is waited for: other objects' puts stay pipelined); a put the bucket
// refuses comes back through Outcome.KV and is retried with Store, which
// settles it (kvConflict).
func Publish[T events.APIObject](ctx context.Context, p *Publisher, revs *Revs, c diff.Change[T]) (out Outcome, err error) {
	res := events.ResourceOf[T]()
	typ := events.TypeName(c.Type)
	var old events.Encoded
	if c.Type == eventsv1.EventType_EVENT_TYPE_MODIFIED {
		old = c.Old
	}
	data, eventID := events.MarshalEvent[T](c.Type, c.ID, c.New, old, time.Now())
	subject := events.Subject(p.cfg.Prefix, res, c.New.ProjectID, c.ID)
	ctx, span := p.tracer.Start(ctx, "publish "+events.ResourceToken(res)+" "+typ, trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", subject),
			attribute.String("messaging.message.id", eventID),
			attribute.String("ambient.resource", events.ResourceToken(res)),
			attribute.String("ambient.event_type", typ),
			attribute.String("ambient.object_id", c.ID),
		)
		if pid := c.New.ProjectID; pid != "" {
			span.SetAttributes(attribute.String("ambient.project_id", pid))
		}
	}
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()

	key := events.ObjectKey(res, c.ID)
	// Both before anything is sent: an event whose KV write could never
	// be sent would leave KV behind the stream for good.
	if err := errors.Join(checkSubject(subject), checkSubject(p.kvSubjectPrefix+key)); err != nil {
		return out, fmt.Errorf("publish %s: %w", eventID, err)
	}
	limit := p.limit()
	msgID := MsgID(eventID, c.Seq)
	// WithExpectStream and WithExpectLastSequencePerSubject add their
	// headers after the message is built (also to a fitted one), and a
	// fitted message gets msgID in place of its event id.
	budget := limit - headerSize(jetstream.ExpectedStreamHeader, p.cfg.Stream) - headerSize(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(c.Seq, 10)) - (len(msgID) - len(eventID))
	msg := events.NewMsgData(ctx, subject, msgID, data)
	if limit > 0 && events.PayloadSize(msg) > budget {
		if msg, out.Omitted, err = fitted(ctx, p.cfg.Prefix, c, old, budget); err != nil {
			return out, err
		}
		msg.Header.Set(events.HeaderMsgID, msgID)
		span.SetAttributes(attribute.String("ambient.omitted", msg.Header.Get(events.HeaderOmitted)), attribute.Int("ambient.event_size", out.Omitted.Size))
	}
	if err := p.connected(); err != nil {
		return out, fmt.Errorf("publish %s: %w", eventID, err)
	}
	if err := p.fence(); err != nil {
		return out, fmt.Errorf("publish %s: %w", eventID, err)
	}
	start := time.Now()
	pctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, p.cfg.Timeout)
		defer cancel()
	}
	ack, err := p.js.PublishMsg(pctx, msg, jetstream.WithExpectStream(p.cfg.Stream), jetstream.WithExpectLastSequencePerSubject(c.Seq))
	switch {
	case wrongLastSeq(err):
		if out.Seq, err = p.conflict(pctx, msg, c.Seq, err); err != nil {
			return out, fmt.Errorf("publish %s: %w", eventID, err)
		}
		out.LostAck = true
		ack = &jetstream.PubAck{Stream: p.cfg.Stream, Sequence: out.Seq, Duplicate: true}
	case err != nil:
		if tooLarge(err) {
			// The limit shrank under us (another server after a reconnect).
			err = fmt.Errorf("%w: %w", ErrUnpublishable, err)
		}
		return out, fmt.Errorf("publish %s: %w", eventID, err)
	}
	took := time.Since(start)
	out.Seq = ack.Sequence
	if span.IsRecording() {
		span.SetAttributes(attribute.Int64("messaging.nats.seq", int64(ack.Sequence)), attribute.Bool("messaging.nats.duplicate", ack.Duplicate))
	}
	if p.cfg.Observe != nil {
		p.cfg.Observe(ctx, res, c.Type, took, ack.Duplicate)
	}
	if p.cfg.AfterPublish != nil {
		ev := &eventsv1.ResourceEvent{}
		if err := proto.Unmarshal(msg.Data, ev); err != nil {
			return out, fmt.Errorf("decode event %s: %w", eventID, err)
		}
		if err := p.cfg.AfterPublish(ctx, ev); err != nil {
			return out, err
		}
	}
	if c.Type != eventsv1.EventType_EVENT_TYPE_DELETED {
		if !p.storable(c.New.Raw, limit) {
			out.KVSkipped = true
			return out, nil
		}
	}
	// The event is in the stream: finish the KV write even if ctx ended
	// meanwhile (shutdown, lease lost), within StoreTimeout, so KV does not
	// fall behind the stream and no later diff repeats this event.
	if c.Type != eventsv1.EventType_EVENT_TYPE_DELETED {
		// Sent now, acked later: the next object's event does not wait for
		// this write (one round trip per object, not two). It expects the
		// revision the object's previous put brings: that one put is
		// waited for, if still in flight.
		rev, err := revs.settledWithin(ctx, c.ID, p.cfg.StoreTimeout)
		if err != nil {
			return out, fmt.Errorf("store %s: %w: the previous write: %w", key, ErrNotStored, err)
		}
		value := events.AppendEventSeq(events.AppendObject[T](nil, c.New.Raw), ack.Sequence)
		if out.KV, err = p.putAsync(revs, c.ID, key, value, rev); err != nil {
			return out, fmt.Errorf("store %s: %w: %w", key, ErrNotStored, err)
		}
		return out, nil
	}
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.StoreTimeout)
	defer cancel()
	if err := p.writeObject(kctx, revs, res, c.ID, nil, 0); err != nil {
		return out, fmt.Errorf("store %s: %w: %w", key, ErrNotStored, err)
	}
	return out, nil
}

// MsgID is the Nats-Msg-Id of the event whose id is eventID
// (events.MsgID: resource, object id, version, type) published expecting
// expected as its subject's last sequence: "<eventID>/<expected>".
//
// Why the expectation is part of it: JetStream drops, within the stream's
// duplicate window (2 minutes), any message whose id it stored before,
// and acks it as a duplicate of the stored one. The event id alone names
// a state, and a state can come back: the API restored from a backup, a
// project deleted and created again identical, an update that sets back
// the very content and updated_at of an earlier version. That event would
// be dropped while consumers hold the newer state it replaces, and the
// duplicate ack would count it as published. A state that comes back
// follows another event of the object, so it expects another sequence
// and gets another id. A retry of the same attempt (a lost ack) expects
// the same sequence and keeps the id: deduplicated as before, and
// recognized by conflict. So is a new leader's publish of an event its
// predecessor sent expecting the same sequence; one expecting another
// sequence is refused, and conflict adopts the event it finds.
//
// The event's event_id (in the body) stays eventID: consumers and
// libs/tally count events by it.
func MsgID(eventID string, expected uint64) string {
	return eventID + "/" + strconv.FormatUint(expected, 10)
}

// checkSubject refuses, as ErrUnpublishable, a subject longer than
// events.MaxSubjectLen. nats-server closes a connection whose PUB line is
// over its max_control_line, and nats.go does not reconnect after that:
// the leader would lose its lease, and its successor would send the same
// again. events.Subject bounds the tokens it makes of API data, so only an
// absurd prefix or an object id far longer than the API assigns (KV keys
// keep the whole id) comes here.
func checkSubject(subject string) error {
	if len(subject) > events.MaxSubjectLen {
		return fmt.Errorf("%w: subject %.64q... of %d bytes is over the limit of %d", ErrUnpublishable, subject, len(subject), events.MaxSubjectLen)
	}
	return nil
}

// headerSize is what a header adds to a message's payload.
func headerSize(name, value string) int { return len(name) + len(": \r\n") + len(value) }

// wrongLastSeq reports the stream's refusal of a message whose expected
// last subject sequence is not the subject's: JSErrCodeStreamWrongLastSequence,
// or on a replicated stream JSErrCodeStreamWrongLastSequenceConstant (also
// while an earlier message of the subject is still being replicated).
func wrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// conflict settles the stream's refusal (cause) of msg, which expected
// its subject's last message at expected. It returns the sequence of msg
// when that is the subject's last message after all (an earlier attempt
// whose ack was lost), and an error otherwise: wrapping ErrConflict and
// Reconfirm's error when the lease could not be reconfirmed, a
// *ConflictError when the last message is another one.
//
// A refusal means someone else's event is the subject's last (a newer
// leader's, after this one lost its lease unawares; a previous leader's
// late event; an older one of this leader's whose ack was lost; a dead
// letter replayed for one consumer group), or none is (aged out by the
// stream's limits, purged), or the cache's sequence was unknown (an entry
// written without it, the tail not read). Only the first may
// not be published after, and only a leader that lost its lease can meet
// it, so the lease is reconfirmed first: Reconfirm's compare-and-swap
// write succeeds only if no other replica has held the lease at any time
// during this term, hence no successor's event can be in the stream. Then,
// and only then, is the subject's last message read. Why that is safe:
// the read only picks what to expect on the next attempt; the server
// checks that expectation again on the publish itself, so an event is
// only ever appended right after the one this leader read, and nobody
// else's event in between. A pause after the reconfirmation, long enough
// for another replica to take over and publish the object, makes the next
// attempt fail the same way, and that replica's Reconfirm fails.
//
// Clustered streams check Nats-Msg-Id before the expected sequence and
// answer a retried event with a duplicate ack; a single server checks the
// expected sequence first (TestServerExpectedLastSubjectSeq): the
// msg id comparison here covers both. The id (MsgID) names the
// expectation too: the same event published after another expectation
// (a previous leader's, whose cache had another sequence) is not taken
// for this attempt but adopted as the subject's last event, which leaves
// nothing to publish when it is the state wanted.
func (p *Publisher) conflict(ctx context.Context, msg *nats.Msg, expected uint64, cause error) (uint64, error) {
	if p.cfg.Reconfirm == nil {
		return 0, fmt.Errorf("%w: %w", ErrConflict, cause)
	}
	if err := p.cfg.Reconfirm(ctx); err != nil {
		return 0, fmt.Errorf("%w: %w; lease not reconfirmed: %w", ErrConflict, cause, err)
	}
	last, err := p.lastMsg(ctx, msg.Subject)
	if err != nil {
		return 0, fmt.Errorf("%w: %w; read the subject's last message: %w", ErrConflict, cause, err)
	}
	if last == nil {
		return 0, &ConflictError{Expected: expected, cause: cause}
	}
	if id := msg.Header.Get(events.HeaderMsgID); id != "" && last.Header.Get(events.HeaderMsgID) == id {
		return last.Sequence, nil
	}
	return 0, &ConflictError{Expected: expected, Last: last.Sequence, last: last, cause: cause}
}

// lastMsg returns the events stream's last message on subject (nil: none).
func (p *Publisher) lastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	return p.lastOf(ctx, &p.stream, p.cfg.Stream, subject)
}

// lastOf returns the last message of subject in the stream named name
// (nil: none), through the stream's handle cached in h (looked up once).
func (p *Publisher) lastOf(ctx context.Context, h *atomic.Pointer[jetstream.Stream], name, subject string) (*jetstream.RawStreamMsg, error) {
	if err := p.connected(); err != nil {
		return nil, err
	}
	s := h.Load()
	if s == nil {
		st, err := p.js.Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		s = &st
		h.Store(s)
	}
	m, err := (*s).GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	return m, err
}

// fence asks Config.Fence, if any.
func (p *Publisher) fence() error {
	if p.cfg.Fence == nil {
		return nil
	}
	return p.cfg.Fence()
}

// putAsync sends a KV put of value under key, the entry of object id,
// expecting rev as the key's last revision, without waiting for its ack:
// a JetStream publish to the bucket's subject, which is all kv.Update
// does (for a bucket without a mirror or a JetStream domain, like the
// objects bucket), checked to land in the bucket's stream. The put is
// id's put in flight in revs until its ack is awaited.
func (p *Publisher) putAsync(revs *Revs, id, key string, value []byte, rev uint64) (*Put, error) {
	if err := p.connected(); err != nil {
		return nil, err
	}
	if err := p.fence(); err != nil {
		return nil, err
	}
	fut, err := p.js.PublishMsgAsync(&nats.Msg{Subject: p.kvSubjectPrefix + key, Data: value},
		jetstream.WithExpectStream(p.kvStream), jetstream.WithExpectLastSequencePerSubject(rev))
	if err != nil {
		return nil, err
	}
	w := &Put{revs: revs, id: id, fut: fut, done: make(chan struct{})}
	revs.track(w)
	return w, nil
}

// fitted builds the message of c the slow way, from decoded objects, and
// trims it to budget (events.NewMsgLimit): only for events over the limit.
func fitted[T events.APIObject](ctx context.Context, prefix string, c diff.Change[T], old events.Encoded, budget int) (*nats.Msg, events.Omission, error) {
	obj, err := c.Object()
	if err != nil {
		return nil, events.Omission{}, fmt.Errorf("%w: %w", ErrUnpublishable, err)
	}
	var oldObj T
	if old.Raw != nil {
		if oldObj, err = events.DecodeObject[T](old.Raw); err != nil {
			return nil, events.Omission{}, fmt.Errorf("%w: %w", ErrUnpublishable, err)
		}
	}
	ev := events.NewEventVersion(c.Type, obj, oldObj, c.Version(), time.Now())
	msg, om, err := events.NewMsgLimit(ctx, prefix, ev, budget)
	if err != nil {
		return nil, om, fmt.Errorf("build message %s: %w: %w", ev.GetEventId(), ErrUnpublishable, err)
	}
	return msg, om, nil
}

// limit is the payload limit of the server the connection talks to (0:
// unknown, not connected yet).
func (p *Publisher) limit() int {
	nc := p.js.Conn()
	if nc == nil {
		return 0
	}
	return int(nc.MaxPayload())
}

// tooLarge reports the errors a retry cannot fix: the client's or the
// stream's size limit.
func tooLarge(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum)
}

// connected fails while the connection is reconnecting. nats.go would keep
// a message published meanwhile in its reconnect buffer and send it after
// the reconnect, even though the call timed out here and the lease may have
// moved on by then: an old leader's event landing after the new leader's
// newer one (TestPartitionedLeaderPublishesNothingLate), or its KV write
// over the new leader's. Callers retry. What remains is a disconnect
// between this check and the write into the buffer.
func (p *Publisher) connected() error {
	if nc := p.js.Conn(); nc != nil && !nc.IsConnected() {
		return nats.ErrConnectionReconnecting
	}
	return nil
}

// Storable reports whether state fits a KV entry (the NATS payload limit
// with the entry's framing); a state that does not is never written, and KV
// keeps the object's last state that fitted.
func (p *Publisher) Storable(state events.Encoded) bool {
	return p.storable(state.Raw, p.limit())
}

func (p *Publisher) storable(raw []byte, limit int) bool {
	return limit <= 0 || len(raw)+8 <= limit
}

// Store writes the encoded state as the persisted state of id (present),
// or removes the key (!present). It retries a KV write after ErrNotStored,
// and rewrites entries (the tail a new leader caught up from, the KV
// audit). seq is the stream sequence of the event that published state
// (0: unknown); the entry records it like Publish's write does, because a
// new leader starts reading the stream from the entries' highest one
// (Loaded.Seq): entries rewritten without it would make that position
// older, or unknown when every entry of the resource was rewritten, and
// the tail would then miss events whose KV write was lost. An object over
// the payload limit is not written (see Outcome.KVSkipped), nor is one
// whose key is over events.MaxSubjectLen (checkSubject).
//
// The write expects the revision of the key's last entry revs knows (once
// id's put in flight, if any, is acked or failed); a refusal is settled
// by kvConflict, an unsettled one wraps ErrKVConflict.
func Store[T events.APIObject](ctx context.Context, p *Publisher, revs *Revs, id string, state events.Encoded, seq uint64, present bool) error {
	res := events.ResourceOf[T]()
	key := events.ObjectKey(res, id)
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	var value []byte
	if present {
		if !p.Storable(state) {
			return nil
		}
		value = events.AppendEventSeq(events.AppendObject[T](nil, state.Raw), seq)
	}
	if err := p.writeObject(ctx, revs, res, id, value, seq); err != nil && !tooLarge(err) && !errors.Is(err, ErrUnpublishable) {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}
