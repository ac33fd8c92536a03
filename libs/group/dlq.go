package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
// is appended whole.
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

// publishDeadLetter publishes the dead letter of msg and waits for the DLQ
// stream to store it. When no stream captures the subject it still tells
// live subscribers and counts that as done.
func (w *worker) publishDeadLetter(ctx context.Context, msg jetstream.Msg, subject string, attempt uint64, reason string, cause error) error {
	dlq := dlqMsg(w.cfg, subject, msg.Headers(), msg.Data(), attempt, reason, cause)
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
