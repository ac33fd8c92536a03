package group_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestDeadLetterPublishRetried: while the DLQ stream refuses letters (full,
// discard new), a message's dead letter is retried in its lane: the
// message stays in the work queue, not terminated and not handed to the
// handler again. Once the stream takes letters, the letter is stored and
// only then is the message terminated. Nothing is lost.
func TestDeadLetterPublishRetried(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var calls atomic.Int32
	cfg := testConfig("a")
	refused := newLogWatch("dead letter publish failed, will retry")
	nc, mjs := testenv.JetStream(t, srv)
	runMember(t, nc, mjs, cfg, func(context.Context, group.Message) error {
		calls.Add(1)
		return group.Terminal(errors.New("invalid name"))
	}, slog.New(refused))
	waitMembers(t, js, "a")

	// Run created the DLQ stream; make it full and refuse more.
	ctx := t.Context()
	if err := fillDLQ(ctx, js); err != nil {
		t.Fatal(err)
	}

	publish(t, js, "s1", 1)
	select {
	case <-refused.seen:
	case <-time.After(15 * time.Second):
		t.Fatal("the dead letter publish never failed")
	}
	if st := cfg.Stats.Snapshot(); st.DeadLettered != 0 || st.InFlight != 1 {
		t.Fatalf("stats while the DLQ refuses = %+v, want the message held, not dead-lettered", st)
	}
	waitWorkQueue(t, js, 1)

	dlq, err := js.Stream(ctx, bus.DLQStreamName)
	if err != nil {
		t.Fatalf("dlq stream: %v", err)
	}
	if err := dlq.Purge(ctx); err != nil { // room again
		t.Fatalf("purge dlq: %v", err)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.DeadLettered != 1 || st.InFlight != 0 {
			return fmt.Errorf("stats %+v, want 1 dead letter and nothing held", st)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	letters, err := group.DeadLetters(ctx, js, "", testGroup, 0)
	if err != nil {
		t.Fatalf("dead letters: %v", err)
	}
	if len(letters) != 1 {
		t.Fatalf("dlq holds %d letters of %s, want 1", len(letters), testGroup)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1: the publish is retried, not the message", n)
	}
}

// TestDeadLetterOfEventNearMaxPayload: an event published close to the
// server's max payload is over it once the dead letter's headers are added.
// Its letter used to be refused for good and retried forever, holding the
// object's lane. Now the letter's error text is cut to make it fit and,
// when that is not enough, its data is left out (HeaderDLQOmitted; such a
// letter cannot be replayed); either way the message is dead-lettered and
// the object's next event is handled.
func TestDeadLetterOfEventNearMaxPayload(t *testing.T) {
	t.Parallel()
	const maxPayload = 16 << 10
	longErr := strings.Repeat("the backend refused this object é ", 40) // ~1.4 KiB, cut at maxErrorHeader
	for _, tc := range []struct {
		name        string
		headroom    int // max payload minus the event's size on the wire
		wantOmitted bool
	}{
		{name: "error text cut", headroom: 1200},
		{name: "data left out", headroom: 16, wantOmitted: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conf := filepath.Join(t.TempDir(), "nats.conf")
			if err := os.WriteFile(conf, fmt.Appendf(nil, "max_payload: %d\n", maxPayload), 0o600); err != nil {
				t.Fatal(err)
			}
			srv := testenv.NATSWith(t, natsserver.Options{ConfigFile: conf})
			_, js := testenv.JetStream(t, srv)
			if _, err := bus.EnsureEventsStream(t.Context(), js, 1, 0); err != nil {
				t.Fatalf("events stream: %v", err)
			}
			var handled atomic.Int32
			cfg := testConfig("a")
			startMember(t, srv, cfg, func(_ context.Context, m group.Message) error {
				if version(m) == 1 {
					return group.Terminal(errors.New(longErr))
				}
				handled.Add(1)
				return nil
			})
			waitMembers(t, js, "a")

			big := eventMsg(t, t.Context(), "s1", 1)
			// An unknown field keeps the event decodable.
			pad := maxPayload - tc.headroom - wireSize(big) - 4
			big.Data = protowire.AppendBytes(protowire.AppendTag(big.Data, 1000, protowire.BytesType), make([]byte, pad))
			if got := wireSize(big); got != maxPayload-tc.headroom {
				t.Fatalf("event is %d bytes on the wire, want %d", got, maxPayload-tc.headroom)
			}
			if _, err := js.PublishMsg(t.Context(), big); err != nil {
				t.Fatalf("publish the big event: %v", err)
			}
			publish(t, js, "s1", 2)

			testenv.Eventually(t, 15*time.Second, func() error {
				if st := cfg.Stats.Snapshot(); st.DeadLettered != 1 || handled.Load() != 1 {
					return fmt.Errorf("dead-lettered %d, later event handled %d times; want 1 and 1", st.DeadLettered, handled.Load())
				}
				return nil
			})
			letters, err := group.DeadLetters(t.Context(), js, "", testGroup, 0)
			if err != nil || len(letters) != 1 {
				t.Fatalf("dead letters: %d (%v), want 1", len(letters), err)
			}
			d := letters[0]
			omitted := d.Header.Get(group.HeaderDLQOmitted)
			if (omitted != "") != tc.wantOmitted {
				t.Fatalf("data omitted %q, want omitted %v", omitted, tc.wantOmitted)
			}
			if !utf8.ValidString(d.Error) || !strings.HasPrefix("terminal: "+longErr, d.Error) {
				t.Errorf("error text %q: want a prefix of the handler's, cut at a rune boundary", d.Error)
			}
			if tc.wantOmitted {
				if len(d.Data) != 0 || omitted != strconv.Itoa(len(big.Data)) {
					t.Errorf("letter holds %d bytes, omitted %q; want none and %d", len(d.Data), omitted, len(big.Data))
				}
				if err := group.Replay(t.Context(), js, d); !errors.Is(err, group.ErrDataOmitted) {
					t.Errorf("replay of a letter without data: %v, want ErrDataOmitted", err)
				}
				return
			}
			if len(d.Error) >= 1024 { // maxErrorHeader: the text was not cut to fit
				t.Errorf("error text of %d bytes: want it cut to fit the max payload", len(d.Error))
			}
			if !bytes.Equal(d.Data, big.Data) {
				t.Errorf("letter data differs from the event's (%d vs %d bytes)", len(d.Data), len(big.Data))
			}
		})
	}
}

// wireSize is m's size against the max payload: its headers as NATS sends
// them, and its data.
func wireSize(m *nats.Msg) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n + len(m.Data)
}
