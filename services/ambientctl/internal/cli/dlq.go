package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
)

// dlqCmd lists and replays the consumer groups' dead letters: events a
// group gave up on (undecodable, a terminal error, or MaxDeliver tries).
// Kube-reconciler's periodic resync repairs what its dead letters missed on
// its own; replay is for the other consumers and for not waiting.
func dlqCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "List and replay dead-lettered events (the AMBIENT_DLQ stream)"}
	var (
		groupName, prefix string
		limit             int
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "Print the dead letters, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := nonNegative("--limit", limit, "all"); err != nil {
				return err
			}
			return o.withJetStream(cmd.Context(), func(ctx context.Context, js jetstream.JetStream) error {
				letters, err := group.DeadLetters(ctx, js, prefix, groupName, limit)
				if err != nil {
					return err
				}
				return printDeadLetters(ctx, cmd.OutOrStdout(), letters, o.output == "json")
			})
		},
	}
	list.Flags().IntVar(&limit, "limit", 0, "print at most this many (0: all)")

	var all bool
	replay := &cobra.Command{
		Use:   "replay [SEQ...]",
		Short: "Publish dead letters again for their group only, then drop them from the DLQ",
		Long: "Publishes each named dead letter (by its SEQ from `dlq list`), or every one with --all\n" +
			"(of --group when given), on its original events subject, marked for the group that gave\n" +
			"up on it: the other groups, which handled the event, ack it without handling it again.\n" +
			"Fix the cause first (see the letter's reason and error), or the event dies again.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return usageError{fmt.Errorf("name the dead letters to replay by SEQ, or pass --all")}
			}
			seqs := make([]uint64, 0, len(args))
			for _, a := range args {
				seq, err := strconv.ParseUint(a, 10, 64)
				if err != nil || seq == 0 {
					return usageError{fmt.Errorf("SEQ must be a dead letter's sequence number from `dlq list`, got %q", a)}
				}
				seqs = append(seqs, seq)
			}
			return o.withJetStream(cmd.Context(), func(ctx context.Context, js jetstream.JetStream) error {
				letters, err := selectDeadLetters(ctx, js, prefix, groupName, seqs)
				if err != nil {
					return err
				}
				for _, d := range letters {
					if err := group.Replay(ctx, js, d); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "replayed %d %s for %s\n", d.Seq, d.Subject, d.Group)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d dead letters replayed\n", len(letters))
				return nil
			})
		},
	}
	replay.Flags().BoolVar(&all, "all", false, "replay every dead letter (of --group when given)")

	pf := cmd.PersistentFlags()
	pf.StringVar(&groupName, "group", "", "only this consumer group's dead letters (e.g. kube-reconciler)")
	pf.StringVar(&prefix, "prefix", events.DLQPrefix, "dead-letter subject prefix")
	cmd.AddCommand(list, replay)
	return cmd
}

// selectDeadLetters returns the letters named by seqs (which must belong to
// groupName when it is set), or every letter when seqs is empty.
func selectDeadLetters(ctx context.Context, js jetstream.JetStream, prefix, groupName string, seqs []uint64) ([]group.DeadLetter, error) {
	if len(seqs) == 0 {
		return group.DeadLetters(ctx, js, prefix, groupName, 0)
	}
	out := make([]group.DeadLetter, 0, len(seqs))
	for _, seq := range seqs {
		d, err := group.DeadLetterAt(ctx, js, seq)
		if err != nil {
			return nil, err
		}
		if groupName != "" && d.Group != groupName {
			return nil, fmt.Errorf("dead letter %d belongs to group %q, not %q", seq, d.Group, groupName)
		}
		out = append(out, d)
	}
	return out, nil
}

// deadLetterJSON is a dead letter as `dlq list -o json` prints it.
type deadLetterJSON struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Group    string    `json:"group"`
	Member   string    `json:"member"`
	Reason   string    `json:"reason"`
	Error    string    `json:"error"`
	Attempts uint64    `json:"attempts"`
	Subject  string    `json:"subject"`
	ObjectID string    `json:"object_id,omitempty"`
	Type     string    `json:"type,omitempty"`
}

func printDeadLetters(ctx context.Context, w io.Writer, letters []group.DeadLetter, asJSON bool) error {
	rows := make([]deadLetterJSON, 0, len(letters))
	for _, d := range letters {
		r := deadLetterJSON{Seq: d.Seq, Time: d.Time.UTC(), Group: d.Group, Member: d.Member, Reason: d.Reason, Error: d.Error, Attempts: d.Attempts, Subject: d.Subject}
		// An undecodable letter still lists; it just has no object.
		if _, ev, err := events.Decode(ctx, d.Header, d.Data); err == nil {
			r.ObjectID, r.Type = ev.GetObjectId(), events.TypeName(ev.GetType())
		}
		rows = append(rows, r)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		return nil
	}
	table := make([][]string, 0, len(rows))
	for _, r := range rows {
		table = append(table, []string{strconv.FormatUint(r.Seq, 10), r.Time.Format(time.RFC3339), r.Group, r.Reason, strconv.FormatUint(r.Attempts, 10), orDash(r.Type), orDash(r.ObjectID), r.Subject, r.Error})
	}
	return printTable(w, []string{"SEQ", "TIME", "GROUP", "REASON", "TRIES", "TYPE", "OBJECT", "SUBJECT", "ERROR"}, table)
}

// withJetStream connects to NATS for one command bounded by --timeout.
func (o *options) withJetStream(ctx context.Context, f func(context.Context, jetstream.JetStream) error) error {
	js, closeNATS, err := o.connectJetStream()
	if err != nil {
		return err
	}
	defer closeNATS()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	return f(ctx, js)
}

// connectJetStream connects to --nats; the caller calls closeNATS.
func (o *options) connectJetStream() (js jetstream.JetStream, closeNATS func(), err error) {
	nc, err := nats.Connect(o.natsURL, nats.Name("ambientctl"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s (is the dev stack running? or pass --nats): %w", envconfig.RedactURLs(o.natsURL), err)
	}
	if js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nc.Close, nil
}
