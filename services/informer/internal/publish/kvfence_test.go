package publish

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/lease"
)

var keyX = events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, "x")

// kvPrompt returns the prompt of session x's objects-bucket entry, and
// ErrKeyNotFound when the key has none.
func kvPrompt(t *testing.T, kv jetstream.KeyValue) (string, error) {
	t.Helper()
	e, err := kv.Get(t.Context(), keyX)
	if err != nil {
		return "", err
	}
	o := &eventsv1.Object{}
	if err := proto.Unmarshal(e.Value(), o); err != nil {
		t.Fatal(err)
	}
	return o.GetSession().GetPrompt(), nil
}

// waitKV waits for the answer to the KV put w (nil: none was sent).
func waitKV(t *testing.T, w *Put) error {
	t.Helper()
	if w == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := w.Wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("no answer to a KV write")
	}
	return err
}

// TestStaleLeaderKVWriteRefused is TestStaleLeaderRefused for the objects
// bucket: leader A's event of X is acked and A is paused before its KV
// write goes out (AfterPublish), longer than the lease TTL; B takes the
// lease over, publishes a newer X (or X's delete) and writes KV; A
// resumes and sends its KV write. The bucket must keep B's state (or no
// key), and A's retry of the refused write must end its term.
func TestStaleLeaderKVWriteRefused(t *testing.T) {
	t.Parallel()
	for _, deleted := range []bool{false, true} {
		name := "newer state"
		if deleted {
			name = "deleted"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const ttl = 30 * time.Second
			_, kv, js := setup(t, 0, time.Second)
			leases := leasesBucket(t, js, ttl)
			ctx := t.Context()
			a := campaign(t, leases, "a", ttl)
			v1, v2, v3 := versioned("x", "v1", 100), versioned("x", "v2: A's, stale", 200), versioned("x", "v3: B's", 300)
			var b *term
			var pb *Publisher
			paused := func(_ context.Context, ev *eventsv1.ResourceEvent) error {
				if ev.GetObject().GetSession().GetPrompt() != v2.GetPrompt() {
					return nil
				}
				// A is paused past its lease right after v2's ack: the key
				// expires (purged here) and B, which found v2 in the
				// stream's tail, takes over and publishes and stores v3 or
				// the delete.
				if err := leases.Purge(ctx, "informer"); err != nil {
					t.Fatal(err)
				}
				b = campaign(t, leases, "b", ttl)
				var err error
				pb, err = New(js, kv, noop.NewTracerProvider().Tracer(""), Config{Prefix: "ev", Stream: "EV", MarkerTTL: time.Second, Fence: b.e.Confirmed, Reconfirm: b.e.Reconfirm})
				if err != nil {
					t.Fatal(err)
				}
				// B's term starts with the bucket's revisions (X: v1's).
				loaded, err := Load[*ambientv1.Session](ctx, kv)
				if err != nil || len(loaded.Objects) != 1 {
					t.Fatalf("B's load: %+v, %v", loaded, err)
				}
				revsOf(pb).known.SetKVRev("x", loaded.Revs[0])
				_, last := streamMsgs(t, js, subjectX)
				c := modified(t, v2, v3, last.Sequence)
				if deleted {
					c = change(t, eventsv1.EventType_EVENT_TYPE_DELETED, v2)
					c.Seq = last.Sequence
				}
				out, err := Publish(ctx, pb, revsOf(pb), c)
				if err != nil {
					t.Fatalf("B's publish: %v", err)
				}
				if err := waitKV(t, out.KV); err != nil {
					t.Fatalf("B's KV write: %v", err)
				}
				return nil
			}
			pa, err := New(js, kv, noop.NewTracerProvider().Tracer(""), Config{Prefix: "ev", Stream: "EV", MarkerTTL: time.Second, Reconfirm: a.e.Reconfirm, AfterPublish: paused})
			if err != nil {
				t.Fatal(err)
			}
			out, err := Publish(ctx, pa, revsOf(pa), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, v1))
			if err != nil {
				t.Fatal(err)
			}
			if err := waitKV(t, out.KV); err != nil {
				t.Fatal(err)
			}
			// A resumes right after B's KV write: its put of v2 goes out
			// (A's Fence is nil: the pause fell after the check).
			out, err = Publish(ctx, pa, revsOf(pa), modified(t, v1, v2, out.Seq))
			if err != nil {
				t.Fatal(err)
			}
			if err := waitKV(t, out.KV); !wrongLastSeq(err) {
				t.Fatalf("A's stale KV write: err = %v, want wrong last sequence", err)
			}
			prompt, err := kvPrompt(t, kv)
			switch {
			case deleted && !errors.Is(err, jetstream.ErrKeyNotFound):
				t.Fatalf("kv after A's stale write of a deleted object: %q, %v; want no key", prompt, err)
			case !deleted && (err != nil || prompt != v3.GetPrompt()):
				t.Fatalf("kv after A's stale write: %q, %v; want B's %q", prompt, err, v3.GetPrompt())
			}
			// A retries the refused write (an owed write): it learns that
			// it lost the lease, writes nothing and stands down.
			state := change(t, eventsv1.EventType_EVENT_TYPE_ADDED, v2).New
			if err := Store[*ambientv1.Session](ctx, pa, revsOf(pa), "x", state, out.Seq, true); !errors.Is(err, ErrKVConflict) || !errors.Is(err, lease.ErrLost) {
				t.Fatalf("A's retried KV write: err = %v, want ErrKVConflict and lease.ErrLost", err)
			}
			select {
			case cause := <-a.lost:
				t.Logf("A stood down: %v", cause)
			case <-time.After(10 * time.Second):
				t.Fatal("A's term did not end after its stale KV write was refused")
			}
			if prompt, err := kvPrompt(t, kv); deleted != errors.Is(err, jetstream.ErrKeyNotFound) || (!deleted && prompt != v3.GetPrompt()) {
				t.Fatalf("kv after A's retry: %q, %v", prompt, err)
			}
		})
	}
}

// TestKVLostAckCountsAsWritten: a KV write whose put landed but whose ack
// never came (the leader still knows the key at the revision before it)
// is retried as an owed write: the bucket refuses it (the key's last
// revision is not the expected one), the leader reconfirms its lease,
// finds its own entry (the same event_seq) and counts it written at that
// revision: no second entry, no error.
func TestKVLostAckCountsAsWritten(t *testing.T) {
	t.Parallel()
	p, kv, _ := setup(t, 0, time.Second)
	reconfirms := countReconfirms(p)
	ctx := t.Context()
	v1, v2 := versioned("x", "v1", 100), versioned("x", "v2", 200)
	var kvConflicts atomic.Int64
	p.cfg.ObserveKVConflict = func(context.Context, eventsv1.Resource) { kvConflicts.Add(1) }
	out, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, v1))
	if err != nil {
		t.Fatal(err)
	}
	if err := waitKV(t, out.KV); err != nil {
		t.Fatal(err)
	}
	// v2's event is acked at seq; its put lands, its ack is lost.
	const seq = 7
	state := change(t, eventsv1.EventType_EVENT_TYPE_ADDED, v2).New
	landed, err := kv.Put(ctx, keyX, events.AppendEventSeq(events.AppendObject[*ambientv1.Session](nil, state.Raw), seq))
	if err != nil {
		t.Fatal(err)
	}
	if err := Store[*ambientv1.Session](ctx, p, revsOf(p), "x", state, seq, true); err != nil {
		t.Fatalf("retried KV write: %v", err)
	}
	e, err := kv.Get(ctx, keyX)
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() != landed {
		t.Fatalf("the key is at revision %d after the retry, want the landed write's %d (counted written, not written again)", e.Revision(), landed)
	}
	if n, c := reconfirms.Load(), kvConflicts.Load(); n != 1 || c != 1 {
		t.Fatalf("%d reconfirmations, %d kv conflicts; want 1 each", n, c)
	}
	if rev := revsOf(p).known.KVRev("x"); rev != landed {
		t.Fatalf("known revision %d, want the landed write's %d", rev, landed)
	}
	// The next write expects the landed one: no refusal.
	v3 := change(t, eventsv1.EventType_EVENT_TYPE_ADDED, versioned("x", "v3", 300)).New
	if err := Store[*ambientv1.Session](ctx, p, revsOf(p), "x", v3, seq+1, true); err != nil || kvConflicts.Load() != 1 {
		t.Fatalf("the next write: %v, %d kv conflicts; want no error and no new conflict", err, kvConflicts.Load())
	}
}

// TestPutsOfOneObjectChain: an object that changes again before its
// previous put was acked: the next put waits for that ack and expects
// the revision it brought, so neither is refused and the bucket ends with
// the newest state; another object's put in between is not refused
// either.
func TestPutsOfOneObjectChain(t *testing.T) {
	t.Parallel()
	p, kv, _ := setup(t, 0, time.Second)
	var kvConflicts atomic.Int64
	p.cfg.ObserveKVConflict = func(context.Context, eventsv1.Resource) { kvConflicts.Add(1) }
	ctx := t.Context()
	var puts []*Put
	var seq uint64
	prev := versioned("x", "v0", 100)
	for i := range 5 {
		cur := versioned("x", "v"+strconv.Itoa(i+1), int64(200+i))
		c := modified(t, prev, cur, seq)
		if i == 0 {
			c = change(t, eventsv1.EventType_EVENT_TYPE_ADDED, cur)
		}
		out, err := Publish(ctx, p, revsOf(p), c)
		if err != nil {
			t.Fatal(err)
		}
		other, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, versioned("y"+strconv.Itoa(i), "y", 100)))
		if err != nil {
			t.Fatal(err)
		}
		puts = append(puts, out.KV, other.KV)
		seq, prev = out.Seq, cur
	}
	for i, w := range puts {
		if err := waitKV(t, w); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if prompt, err := kvPrompt(t, kv); err != nil || prompt != "v5" || kvConflicts.Load() != 0 {
		t.Fatalf("kv holds %q (%v) after %d conflicts, want v5 and none", prompt, err, kvConflicts.Load())
	}
}

// TestStaleLeaderOwedFloorRefused: the owed floor (OwedKey) is fenced like
// an object's entry. Leader A stored a floor and is paused past its
// lease; B takes over and lowers the floor for writes it owes; A resumes
// and removes the floor (its own owed writes landed). Unfenced, A's
// removal would hide B's owed writes from the next leader's tail read;
// here it is refused, A's retry fails its reconfirmation, and the key
// keeps B's floor.
func TestStaleLeaderOwedFloorRefused(t *testing.T) {
	t.Parallel()
	const ttl = 30 * time.Second
	_, kv, js := setup(t, 0, time.Second)
	leases := leasesBucket(t, js, ttl)
	ctx := t.Context()
	a := campaign(t, leases, "a", ttl)
	// A's Fence is nil: its pause falls after the check.
	pa, err := New(js, kv, noop.NewTracerProvider().Tracer(""), Config{Prefix: "ev", Stream: "EV", MarkerTTL: time.Second, Reconfirm: a.e.Reconfirm})
	if err != nil {
		t.Fatal(err)
	}
	fa, err := ReadOwed[*ambientv1.Session](ctx, pa)
	if err != nil || fa != (Floor{}) {
		t.Fatalf("A's first read: %+v, %v; want no floor", fa, err)
	}
	if fa, err = StoreOwed[*ambientv1.Session](ctx, pa, fa, 10); err != nil {
		t.Fatal(err)
	}

	if err := leases.Purge(ctx, "informer"); err != nil {
		t.Fatal(err)
	}
	b := campaign(t, leases, "b", ttl)
	pb, err := New(js, kv, noop.NewTracerProvider().Tracer(""), Config{Prefix: "ev", Stream: "EV", MarkerTTL: time.Second, Fence: b.e.Confirmed, Reconfirm: b.e.Reconfirm})
	if err != nil {
		t.Fatal(err)
	}
	fb, err := ReadOwed[*ambientv1.Session](ctx, pb)
	if err != nil || fb.Seq != 10 {
		t.Fatalf("B's read: %+v, %v; want A's floor 10", fb, err)
	}
	if _, err = StoreOwed[*ambientv1.Session](ctx, pb, fb, 7); err != nil {
		t.Fatal(err)
	}

	_, err = StoreOwed[*ambientv1.Session](ctx, pa, fa, 0)
	if !errors.Is(err, ErrKVConflict) || !errors.Is(err, lease.ErrLost) {
		t.Fatalf("A's late removal of the floor: err = %v, want ErrKVConflict and lease.ErrLost", err)
	}
	if got, err := ReadOwed[*ambientv1.Session](ctx, pb); err != nil || got.Seq != 7 {
		t.Fatalf("floor after A's late removal: %+v, %v; want B's 7", got, err)
	}
	select {
	case cause := <-a.lost:
		t.Logf("A stood down: %v", cause)
	case <-time.After(10 * time.Second):
		t.Fatal("A's term did not end after its stale floor write was refused")
	}
}
