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
	// Attempt is 1 on the first delivery and counts redeliveries after it.
	// It restarts at 1 when the object's partition moves to another member.
	Attempt uint64
	// Seq is the message's sequence in the group's work-queue stream
	// (<Stream>-<Group>), not in the events stream.
	Seq uint64
}

// Handler processes one event. The ctx carries the trace context from the
// message headers and is cancelled when the member stops and its grace has
// passed. Return nil to ack, an error to retry with backoff, or an error
// wrapped with Terminal to dead-letter at once. Handlers must be idempotent:
// delivery is at least once (a message in flight when a member dies or a
// partition moves is delivered again). Run calls the handler for one
// message at a time per member, in stream order.
type Handler func(ctx context.Context, m Message) error
