package group

import (
	"context"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/nats-io/nats.go"
)

// Message is one delivery of an event to a member.
type Message struct {
	// Event is the decoded event; never nil.
	Event *eventsv1.ResourceEvent
	// Subject is the original event subject (<prefix>.<res>.<proj>.<id>).
	Subject string
	// Header holds the message headers (Nats-Msg-Id, traceparent, ...).
	Header nats.Header
	// Attempt is 1 on the first try and counts the tries after it: those
	// in the object's lane, and those of the member's previous run when it
	// was killed and restarted under the same name before its consumer was
	// deleted. It restarts at 1 when the message goes to another consumer:
	// the partition moved, or the member stopped gracefully (which deletes
	// its consumer). With Config.Coalesce a retry that took in newer
	// messages (Coalesced) goes on counting from the failed call's.
	Attempt uint64
	// Seq is the message's sequence in the group's work-queue stream
	// (<Stream>-<Group>), not in the events stream.
	Seq uint64
	// Coalesced is how many older messages of the same object this call
	// stands for (Config.Coalesce): they are acked with this one. 0
	// without coalescing.
	Coalesced int
}

// Handler processes one event. The ctx carries the call's CONSUMER span, a
// child of the producer span from the message headers (linked to the
// producers of coalesced messages), and the event's object as
// telemetry.ContextWithAttributes, so every span the handler starts (its
// API calls too) is in that trace and names the object. It is cancelled
// when the member stops and its grace has passed, or with cause ErrPartitionMoved when the object's partition moves
// to another member. Return nil to ack, an error to retry with backoff, or
// an error wrapped with Terminal to dead-letter at once. Handlers must be
// idempotent: delivery is at least once (a message in flight when a member
// dies or a partition moves is delivered again). Run calls the handler for
// at most one message per object at a time, in stream order per object,
// and for up to Config.MaxInFlight objects concurrently: a handler must be
// safe for concurrent use across objects.
type Handler func(ctx context.Context, m Message) error
