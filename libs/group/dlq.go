package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
)

// Headers added to a dead letter. The original headers (except the
// server's Nats-* ones) and data are kept unchanged.
const (
	HeaderDLQReason        = "Ambient-Dlq-Reason"
	HeaderDLQError         = "Ambient-Dlq-Error"
	HeaderDLQGroup         = "Ambient-Dlq-Group"
	HeaderDLQMember        = "Ambient-Dlq-Member"
	HeaderDLQAttempts      = "Ambient-Dlq-Attempts"
	HeaderDLQSubject       = "Ambient-Dlq-Subject"
	HeaderDLQOriginalMsgID = "Ambient-Dlq-Msg-Id"
	// HeaderDLQOmitted says the letter's data was left out (its value is
	// the data's size in bytes): with the letter's headers the event was
	// over the server's max payload. Such a letter records the failure
	// but cannot be replayed (ErrDataOmitted).
	HeaderDLQOmitted = "Ambient-Dlq-Omitted"
)

// HeaderReplayGroup marks an event republished to the events stream for one
// group only (a dead letter replayed by `ambientctl dlq replay`): members of
// every other group ack it without calling their handler, so a replay for
// one consumer is never a second delivery to the others. Its value is the
// group name.
const HeaderReplayGroup = "Ambient-Replay-Group"

// Values of HeaderDLQReason.
const (
	ReasonUndecodable = "undecodable"
	ReasonTerminal    = "terminal"
	ReasonExhausted   = "max_deliver"
)

// maxErrorHeader keeps a dead letter's error text small; NATS headers
// share the max payload with the data.
const maxErrorHeader = 1024

// DLQSubject returns where a message on subject goes when it dies in cfg's
// group: <DLQPrefix>.<group>.<subject without SubjectPrefix>, e.g.
// ambient.dlq.kube-reconciler.sessions.p1.s1. A subject outside the prefix
// is appended whole. Each token over events.MaxTokenLen becomes its digest
// token: an event published before subjects were bounded can be just
// under the server's max_control_line, and its dead letter, longer by the
// group's name, over it (the server then closes the member's connection).
func DLQSubject(cfg Config, subject string) string {
	prefix, dlq := cfg.SubjectPrefix, cfg.DLQPrefix
	if prefix == "" {
		prefix = defaultSubjectPrefix
	}
	if dlq == "" {
		dlq = defaultDLQPrefix
	}
	tail, ok := strings.CutPrefix(subject, prefix+".")
	if !ok || tail == "" {
		tail = subject
	}
	if len(tail) > events.MaxTokenLen {
		toks := strings.Split(tail, ".")
		for i, tok := range toks {
			toks[i] = events.BoundToken(tok)
		}
		tail = strings.Join(toks, ".")
	}
	return dlq + "." + cfg.Group + "." + tail
}

// dlqMsg builds the dead letter of a delivery.
func dlqMsg(cfg Config, subject string, header nats.Header, data []byte, attempt uint64, reason string, cause error) *nats.Msg {
	m := nats.NewMsg(DLQSubject(cfg, subject))
	m.Data = data
	for k, v := range header {
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		m.Header[k] = slices.Clone(v)
	}
	errText := cause.Error()
	if len(errText) > maxErrorHeader {
		errText = errText[:maxErrorHeader]
	}
	m.Header.Set(HeaderDLQReason, reason)
	m.Header.Set(HeaderDLQError, strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, errText))
	m.Header.Set(HeaderDLQGroup, cfg.Group)
	m.Header.Set(HeaderDLQMember, cfg.Member)
	m.Header.Set(HeaderDLQAttempts, strconv.FormatUint(attempt, 10))
	m.Header.Set(HeaderDLQSubject, subject)
	if id := header.Get(jetstream.MsgIDHeader); id != "" {
		m.Header.Set(HeaderDLQOriginalMsgID, id)
		// Per group: the same event dead in two groups is two letters.
		m.Header.Set(jetstream.MsgIDHeader, cfg.Group+"/"+id)
	}
	return m
}

// fitPayload makes the dead letter m fit the server's max payload: an
// event published near that limit is over it with the letter's headers
// added, and a letter refused for its size would be retried forever,
// holding its lane. So the error text is cut first, and if that is not
// enough the data is left out (HeaderDLQOmitted): the failure is still
// recorded, the object heals at its next event or resync. It reports
// whether the data was left out.
func fitPayload(m *nats.Msg, maxPayload int) bool {
	over := headerSize(m.Header) + len(m.Data) - maxPayload
	if maxPayload <= 0 || over <= 0 {
		return false
	}
	if errText := m.Header.Get(HeaderDLQError); errText != "" {
		keep := max(0, len(errText)-over)
		for keep > 0 && !utf8.RuneStart(errText[keep]) {
			keep-- // cut at a rune boundary
		}
		m.Header.Set(HeaderDLQError, errText[:keep])
		if over = headerSize(m.Header) + len(m.Data) - maxPayload; over <= 0 {
			return false
		}
	}
	m.Header.Set(HeaderDLQOmitted, strconv.Itoa(len(m.Data)))
	m.Data = nil
	return true
}

// headerSize is the size of h on the wire (NATS/1.0 status line, one
// "Key: value" line per value, the blank line), which counts against the
// max payload with the data.
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// publishDeadLetter publishes the dead letter of msg and waits for the DLQ
// stream to store it. When no stream captures the subject it still tells
// live subscribers and counts that as done.
func (w *worker) publishDeadLetter(ctx context.Context, msg jetstream.Msg, subject string, attempt uint64, reason string, cause error) error {
	dlq := dlqMsg(w.cfg, subject, msg.Headers(), msg.Data(), attempt, reason, cause)
	if fitPayload(dlq, int(w.js.Conn().MaxPayload())) {
		w.log.Warn("dead letter without its data: over the max payload with the letter's headers",
			slog.String(logkey.Subject, subject), slog.String("size", dlq.Header.Get(HeaderDLQOmitted)))
	}
	pctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	_, err := w.js.PublishMsg(pctx, dlq)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		w.log.Warn("no stream stores dead letters", slog.String(logkey.Subject, dlq.Subject))
		err = w.js.Conn().PublishMsg(dlq)
	}
	if err != nil {
		return fmt.Errorf("publish dead letter %s: %w", dlq.Subject, err)
	}
	return nil
}
