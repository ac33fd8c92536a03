package group

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
)

// DeadLetter is one message of the dead-letter stream: an event a group
// gave up on, with why.
type DeadLetter struct {
	// Seq is the message's sequence in the dead-letter stream; DeadLetterAt
	// finds a letter by it and Replay deletes it by it.
	Seq      uint64
	Time     time.Time
	Group    string
	Member   string
	Reason   string
	Error    string
	Attempts uint64
	// Subject is the event's subject in the events stream, where a replay
	// publishes it again.
	Subject string
	Header  nats.Header
	Data    []byte
}

// ErrNotDeadLetter is returned for a message of the dead-letter stream
// that lacks the headers a group writes, so it cannot be replayed.
var ErrNotDeadLetter = errors.New("not a dead letter of a consumer group")

// ErrDataOmitted is returned by Replay for a dead letter stored without its
// event (HeaderDLQOmitted): there is nothing to publish again.
var ErrDataOmitted = errors.New("the dead letter was stored without its event (over the max payload); the object heals at its next change or resync")

// DeadLetters returns the dead letters under dlqPrefix (the groups'
// Config.DLQPrefix; "" is the default) of groupName (every group when it is
// empty), oldest first, at most limit of them (0: all). It reads what the
// stream holds when it is called and does not wait for more.
func DeadLetters(ctx context.Context, js jetstream.JetStream, dlqPrefix, groupName string, limit int) ([]DeadLetter, error) {
	if dlqPrefix == "" {
		dlqPrefix = defaultDLQPrefix
	}
	filter := dlqPrefix + ".>"
	if groupName != "" {
		filter = dlqPrefix + "." + groupName + ".>"
	}
	stream, err := js.Stream(ctx, bus.DLQStreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil // nothing has died yet
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", bus.DLQStreamName, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", bus.DLQStreamName, err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	last := info.State.LastSeq
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", bus.DLQStreamName, err)
	}
	var out []DeadLetter
	for limit == 0 || len(out) < limit {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return nil, fmt.Errorf("read stream %s: %w", bus.DLQStreamName, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return nil, fmt.Errorf("dead letter metadata: %w", err)
			}
			if meta.Sequence.Stream > last {
				return out, nil
			}
			if limit == 0 || len(out) < limit {
				out = append(out, deadLetterOf(meta.Sequence.Stream, meta.Timestamp, msg.Headers(), msg.Data()))
			}
			if meta.Sequence.Stream == last {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("read stream %s: %w", bus.DLQStreamName, err)
		}
		if n == 0 {
			return out, nil // the filter matched nothing more
		}
	}
	return out, nil
}

// DeadLetterAt returns the dead letter stored at seq.
func DeadLetterAt(ctx context.Context, js jetstream.JetStream, seq uint64) (DeadLetter, error) {
	stream, err := js.Stream(ctx, bus.DLQStreamName)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("look up stream %s: %w", bus.DLQStreamName, err)
	}
	raw, err := stream.GetMsg(ctx, seq)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return deadLetterOf(raw.Sequence, raw.Time, raw.Header, raw.Data), nil
}

func deadLetterOf(seq uint64, at time.Time, h nats.Header, data []byte) DeadLetter {
	attempts, _ := strconv.ParseUint(h.Get(HeaderDLQAttempts), 10, 64) // absent or garbled: 0
	return DeadLetter{
		Seq:      seq,
		Time:     at,
		Group:    h.Get(HeaderDLQGroup),
		Member:   h.Get(HeaderDLQMember),
		Reason:   h.Get(HeaderDLQReason),
		Error:    h.Get(HeaderDLQError),
		Attempts: attempts,
		Subject:  h.Get(HeaderDLQSubject),
		Header:   h,
		Data:     data,
	}
}

// Replay publishes d's event again on its original subject, marked
// (HeaderReplayGroup) for d's group only so that the other groups, which
// handled it, do not handle it twice; then it deletes d from the
// dead-letter stream. The replay's message id is derived from d's sequence,
// so replaying the same letter twice within the events stream's duplicate
// window stores it once.
func Replay(ctx context.Context, js jetstream.JetStream, d DeadLetter) error {
	if d.Group == "" || d.Subject == "" {
		return fmt.Errorf("dead letter %d: %w", d.Seq, ErrNotDeadLetter)
	}
	if d.Header.Get(HeaderDLQOmitted) != "" {
		return fmt.Errorf("dead letter %d: %w", d.Seq, ErrDataOmitted)
	}
	msg := replayMsg(d.Subject, d.Header, d.Data, d.Group, "replay/"+bus.DLQStreamName+"/"+strconv.FormatUint(d.Seq, 10))
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("replay dead letter %d on %s: %w", d.Seq, d.Subject, err)
	}
	stream, err := js.Stream(ctx, bus.DLQStreamName)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", bus.DLQStreamName, err)
	}
	// A letter replayed before is gone already; the server reports that
	// only as a generic delete failure, so look first.
	if _, err := stream.GetMsg(ctx, d.Seq); errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err := stream.DeleteMsg(ctx, d.Seq); err != nil {
		return fmt.Errorf("replayed dead letter %d, but deleting it: %w", d.Seq, err)
	}
	return nil
}

// replayMsg is an event published again on subject for group only
// (HeaderReplayGroup), with msgID for the events stream's duplicate
// window: a replayed dead letter and a parked event given up by its lane
// (park.go). The server's own headers and the DLQ's are not copied.
func replayMsg(subject string, header nats.Header, data []byte, group, msgID string) *nats.Msg {
	msg := nats.NewMsg(subject)
	msg.Data = data
	for k, v := range header {
		if strings.HasPrefix(k, "Ambient-Dlq-") || strings.HasPrefix(k, "Nats-") {
			continue
		}
		msg.Header[k] = v
	}
	msg.Header.Set(HeaderReplayGroup, group)
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	return msg
}
