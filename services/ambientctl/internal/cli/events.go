package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
)

func eventsCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "events", Short: "Read the ResourceEvent stream"}
	var (
		resource, prefix, stream string
		asJSON, all              bool
		count                    int
	)
	tail := &cobra.Command{
		Use:   "tail",
		Short: "Print events as they are published (Ctrl-C to stop)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := nonNegative("--count", count, "no limit"); err != nil {
				return err
			}
			filter := events.AllSubjects(prefix)
			if resource != "" {
				r, err := events.ParseResourceToken(resource)
				if err != nil {
					return usageError{fmt.Errorf("--resource must be sessions, projects or project_settings, got %q", resource)}
				}
				filter = events.FilterSubject(prefix, r)
			}
			// -o json asks for JSON as --json does (it printed text lines).
			asJSON = asJSON || o.output == "json"
			return o.tail(cmd.Context(), cmd.OutOrStdout(), tailSpec{stream: stream, filter: filter, prefix: prefix, json: asJSON, all: all, count: count})
		},
	}
	f := tail.Flags()
	f.StringVar(&resource, "resource", "", "only this resource: sessions, projects or project_settings")
	f.BoolVar(&asJSON, "json", false, "print each event as one line of JSON (as -o json does)")
	f.BoolVar(&all, "all", false, "start from the oldest event kept instead of new ones")
	f.IntVar(&count, "count", 0, "exit after this many events (0: run until interrupted)")
	f.StringVar(&prefix, "prefix", events.SubjectPrefix, "subject prefix (ambient.shadow.events for a shadow informer)")
	f.StringVar(&stream, "stream", events.StreamName, "JetStream stream")
	cmd.AddCommand(tail)
	return cmd
}

type tailSpec struct {
	stream, filter, prefix string
	json, all              bool
	count                  int
}

func (o *options) tail(ctx context.Context, w io.Writer, spec tailSpec) error {
	js, closeNATS, err := o.connectJetStream()
	if err != nil {
		return err
	}
	defer closeNATS()
	policy := jetstream.DeliverNewPolicy
	if spec.all {
		policy = jetstream.DeliverAllPolicy
	}
	cons, err := js.OrderedConsumer(ctx, spec.stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{spec.filter}, DeliverPolicy: policy})
	if err != nil {
		return fmt.Errorf("read stream %s: %w", spec.stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read stream %s: %w", spec.stream, err)
	}
	// Messages blocks in Next; stopping the iterator when ctx ends unblocks it.
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	seen := 0
	for spec.count == 0 || seen < spec.count {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("read stream %s: %w", spec.stream, err)
		}
		seen++
		_, ev, err := events.Decode(ctx, msg.Headers(), msg.Data())
		if err != nil {
			fmt.Fprintf(w, "undecodable message on %s: %v\n", msg.Subject(), err)
			continue
		}
		if err := printEvent(w, ev, spec.json); err != nil {
			return err
		}
	}
	return nil
}

var eventJSON = protojson.MarshalOptions{UseProtoNames: true}

func printEvent(w io.Writer, ev *eventsv1.ResourceEvent, asJSON bool) error {
	if asJSON {
		b, err := eventJSON.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	detail := ""
	if s, ok := events.Unwrap[*ambientv1.Session](ev.GetObject()); ok {
		detail = " phase=" + orDash(s.GetPhase())
	}
	_, err := fmt.Fprintf(w, "%s %-8s %-16s %s/%s version=%s%s\n",
		ev.GetObservedTime().AsTime().Format(time.RFC3339), events.TypeName(ev.GetType()), events.ResourceToken(ev.GetResource()),
		orDash(ev.GetProjectId()), ev.GetObjectId(), ev.GetVersion(), detail)
	return err
}
