package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// storeLossRecord is what a NATS node that came back with an empty store
// (FaultNodeStoreLoss) showed.
type storeLossRecord struct {
	// MetaLeader is the JetStream meta leader when the node was killed.
	MetaLeader string
	// Files and Bytes were in the node's store when it was emptied.
	Files int
	Bytes int64
	// Streams are the streams and buckets (KV_<bucket>) of the cluster
	// before the kill: the node must be a current replica of each again.
	Streams []string
	// Consumers are the replicated consumers ("<stream>/<consumer>") the
	// node was a replica of before the kill: the consumer groups' members
	// (named, not durable, replicated as their work-queue stream is) and
	// the services' durable consumers, whose delivery and ack state the
	// node must take back from its peers as it takes the streams'. One
	// deleted since (a consumer group member that left) is not counted.
	Consumers []string `json:",omitempty"`
	// Leaders are the events stream's and the meta group's leaders as
	// they changed, from the kill until the node was current again (or the
	// deadline): "+1.2s events nats-1".
	Leaders []string
	// Ready is how long after its restart the node answered its readiness
	// probe (nats-server's /healthz, which already waits until its
	// JetStream is current with the meta leader and its streams).
	Ready time.Duration
	// CaughtUp is how long after the node answered its readiness probe it
	// was a current replica with lag 0 of every stream in Streams; -1: not
	// by the deadline (the fault's settle time), Behind then says where.
	CaughtUp time.Duration
	Behind   []string `json:",omitempty"`
	// LocalStreams and LocalMsgs are what the node's own store held once
	// current (its /jsz): every stream rebuilt from its peers.
	LocalStreams int
	LocalMsgs    uint64
	// EndBehind is where the node was not a current replica when the audit
	// read the streams at the end of the run (set by the harness).
	EndBehind []string `json:",omitempty"`
}

// storeLossPoll is how often the catch-up and the leaders are read.
const storeLossPoll = 250 * time.Millisecond

// storeLoss kills the events stream's leader (kill -9), empties its store
// while it is down, restarts it after rec.Down under the same name and
// routes, then waits up to rec.Settle after it is ready until it is a
// current replica of every stream and bucket again.
//
// The events stream's leader, not the meta leader: the stream every
// consumer reads loses its leader and must elect one, the node with the
// most recent copy of it loses that copy, and it must take the largest
// stream back from its peers. Whether it also led the meta group is in
// the record (the node loss before it usually moved the leaders, so the
// two are often not the same node).
func (in *injector) storeLoss(ctx context.Context, rec *faultRecord) error {
	sl := &storeLossRecord{CaughtUp: -1}
	rec.StoreLoss = sl
	node, err := streamLeader(ctx, in.sys.nats, eventsStream)
	rec.Note = "the leader of " + eventsStream
	if err != nil {
		node = in.sys.nats[0].Name
		rec.Note = "events stream leader unknown (" + err.Error() + "); killed " + node
	}
	rec.Target = node
	nn, ok := in.natsNode(node)
	if !ok {
		return fmt.Errorf("no NATS node %s", node)
	}
	if meta, _, err := clusterLeaders(ctx, in.sys.nats); err == nil {
		sl.MetaLeader = meta
	}
	before, err := in.nv.streams(ctx)
	if err != nil {
		return fmt.Errorf("streams before the store loss: %w", err)
	}
	for _, s := range before {
		sl.Streams = append(sl.Streams, s.Name)
	}
	if sl.Consumers, err = in.nv.replicatedConsumers(ctx, node); err != nil {
		return fmt.Errorf("replicated consumers before the store loss: %w", err)
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	var watched sync.WaitGroup
	var leaders []string
	watched.Go(func() { leaders = watchLeaders(watchCtx, in.sys.nats, time.Now()) })
	stop := func() {
		stopWatch()
		watched.Wait()
		sl.Leaders = leaders
	}

	err = in.outageThen(ctx, rec, kill9, []string{node}, func(context.Context) error {
		// The process is gone (kill9 waits for its exit): nothing writes
		// the store any more. A new PersistentVolume is an empty directory.
		files, size, err := emptyDir(nn.StoreDir)
		sl.Files, sl.Bytes = files, size
		return err
	})
	if err != nil {
		stop()
		return err
	}
	// outageThen released the node (started it again) Down after Down0.
	sl.Ready = rec.Restored.Sub(rec.Down0.Add(rec.Down))
	took, behind := in.nv.awaitCurrent(ctx, node, sl.replicated(), rec.Restored.Add(rec.Settle))
	stop()
	sl.CaughtUp, sl.Behind = took, behind
	if n, msgs, err := localJetStream(ctx, nn); err == nil {
		sl.LocalStreams, sl.LocalMsgs = n, msgs
	}
	rec.Note += storeLossNote(*sl, rec.Settle)
	return nil
}

// replicated is what the node must be a current replica of again: the
// streams and buckets, then the replicated consumers.
func (sl storeLossRecord) replicated() []string {
	return append(slices.Clone(sl.Streams), sl.Consumers...)
}

// natsNode returns the NATS node called name.
func (in *injector) natsNode(name string) (natsNode, bool) {
	i := slices.IndexFunc(in.sys.nats, func(n natsNode) bool { return n.Name == name })
	if i < 0 {
		return natsNode{}, false
	}
	return in.sys.nats[i], true
}

// storeLossNote renders the record for the fault schedule.
func storeLossNote(sl storeLossRecord, settle time.Duration) string {
	var b strings.Builder
	if sl.MetaLeader != "" {
		fmt.Fprintf(&b, " (the meta leader: %s)", sl.MetaLeader)
	}
	fmt.Fprintf(&b, "; store emptied while down: %d files, %.1f MiB", sl.Files, float64(sl.Bytes)/(1<<20))
	if len(sl.Leaders) > 0 {
		fmt.Fprintf(&b, "; leaders from the kill: %s", strings.Join(sl.Leaders, ", "))
	}
	fmt.Fprintf(&b, "; ready %s after its restart", sl.Ready.Round(100*time.Millisecond))
	if sl.CaughtUp >= 0 {
		fmt.Fprintf(&b, "; a current replica (lag 0) of all %d streams and buckets and %d replicated consumers %s after it was ready", len(sl.Streams), len(sl.Consumers), sl.CaughtUp.Round(100*time.Millisecond))
	} else {
		fmt.Fprintf(&b, "; not a current replica of every stream %s after it was ready: %s", settle, strings.Join(sl.Behind, "; "))
	}
	fmt.Fprintf(&b, "; its store then held %d streams, %d messages", sl.LocalStreams, sl.LocalMsgs)
	return b.String()
}

// emptyDir deletes everything in dir and leaves it empty; it returns the
// files and bytes that were there.
func emptyDir(dir string) (int, int64, error) {
	var files int
	var size int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files++
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return files, size, fmt.Errorf("read the store %s: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return files, size, fmt.Errorf("delete the store %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return files, size, fmt.Errorf("create the empty store %s: %w", dir, err)
	}
	return files, size, nil
}

// replicaProblem says why node is not a current replica of a stream whose
// cluster is ci ("": it is): the leader, or a follower the leader counts
// current, online, with lag 0.
//
// A stream without a leader says nothing of its replicas: nats-server
// then lets a replica answer the info request from its own view, and a
// node that came back with an empty store lists itself current with lag 0
// before any leader has counted what it holds.
func replicaProblem(ci *jetstream.ClusterInfo, node string) string {
	switch {
	case ci == nil:
		return "no cluster information"
	case ci.Leader == "":
		return "no leader"
	case ci.Leader == node:
		return ""
	}
	for _, p := range ci.Replicas {
		if p == nil || p.Name != node {
			continue
		}
		switch {
		case p.Offline:
			return "offline"
		case !p.Current:
			return fmt.Sprintf("not current (lag %d)", p.Lag)
		case p.Lag > 0:
			return fmt.Sprintf("lag %d", p.Lag)
		}
		return ""
	}
	return "not a replica (leader " + ci.Leader + ")"
}

// replicasBehind reads every stream and replicated consumer
// ("<stream>/<consumer>": a stream name never holds a '/') of want and
// returns, one line each, those node is not a current replica of (or that
// could not be read). A consumer deleted since is passed over.
func (v *natsView) replicasBehind(ctx context.Context, node string, want []string) []string {
	var behind []string
	for _, name := range want {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ci, err := v.clusterOf(rctx, name)
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
		case err != nil:
			behind = append(behind, name+": "+err.Error())
		default:
			if p := replicaProblem(ci, node); p != "" {
				behind = append(behind, name+": "+p)
			}
		}
	}
	return behind
}

// clusterOf reads the cluster information of a stream, or of a consumer
// named "<stream>/<consumer>".
func (v *natsView) clusterOf(ctx context.Context, name string) (*jetstream.ClusterInfo, error) {
	stream, consumer, isConsumer := strings.Cut(name, "/")
	if isConsumer {
		c, err := v.js.Consumer(ctx, stream, consumer)
		if err != nil {
			return nil, fmt.Errorf("consumer: %w", err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("consumer info: %w", err)
		}
		return info.Cluster, nil
	}
	st, err := v.js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	return info.Cluster, nil
}

// replicatedConsumers returns the consumers ("<stream>/<consumer>") with
// more than one replica that node leads or follows, sorted. Not only the
// durable ones: a consumer group's members are named consumers without a
// durable name, replicated as their work-queue stream is. The R1 ones (KV
// watches, ordered readers) live on one node and have no peers to catch
// up from.
func (v *natsView) replicatedConsumers(ctx context.Context, node string) ([]string, error) {
	var out []string
	streams := v.js.ListStreams(ctx)
	for si := range streams.Info() {
		st, err := v.js.Stream(ctx, si.Config.Name)
		if err != nil {
			return out, fmt.Errorf("stream %s: %w", si.Config.Name, err)
		}
		consumers := st.ListConsumers(ctx)
		for ci := range consumers.Info() {
			if ci.Cluster == nil || len(ci.Cluster.Replicas) == 0 || !hasReplica(ci.Cluster, node) {
				continue
			}
			out = append(out, si.Config.Name+"/"+ci.Name)
		}
		if err := consumers.Err(); err != nil {
			return out, fmt.Errorf("list consumers of %s: %w", si.Config.Name, err)
		}
	}
	if err := streams.Err(); err != nil {
		return out, fmt.Errorf("list streams: %w", err)
	}
	slices.Sort(out)
	return out, nil
}

// hasReplica reports whether node leads or follows a stream or consumer
// whose cluster is ci.
func hasReplica(ci *jetstream.ClusterInfo, node string) bool {
	if ci == nil {
		return false
	}
	return ci.Leader == node || slices.ContainsFunc(ci.Replicas, func(p *jetstream.PeerInfo) bool { return p != nil && p.Name == node })
}

// awaitCurrent polls until node is a current replica of every stream of
// want or deadline passes; it returns how long that took (-1: not by the
// deadline) and, then, where it was behind at the last look.
func (v *natsView) awaitCurrent(ctx context.Context, node string, want []string, deadline time.Time) (time.Duration, []string) {
	start := time.Now()
	for {
		behind := v.replicasBehind(ctx, node, want)
		if len(behind) == 0 {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) || sleepUntil(ctx, time.Now().Add(storeLossPoll)) != nil {
			return -1, behind
		}
	}
}

// jszLeaders is the part of /jsz?streams=true the leader watch reads.
type jszLeaders struct {
	Meta *struct {
		Leader string `json:"leader"`
	} `json:"meta_cluster"`
	Streams  int    `json:"streams"`
	Messages uint64 `json:"messages"`
	jszStreams
}

// readJsz reads /jsz?streams=true of node.
func readJsz(ctx context.Context, node natsNode) (jszLeaders, error) {
	var j jszLeaders
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, node.monitorURL()+"/jsz?streams=true", nil)
	if err != nil {
		return j, fmt.Errorf("build jsz request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return j, fmt.Errorf("jsz of %s: %w", node.Name, err)
	}
	defer resp.Body.Close() //nolint:errcheck // read below
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		return j, fmt.Errorf("decode jsz of %s: %w", node.Name, err)
	}
	return j, nil
}

// clusterLeaders returns the meta leader and the events stream's leader as
// the first node that knows both sees them.
func clusterLeaders(ctx context.Context, nodes []natsNode) (meta, events string, err error) {
	var errs []error
	for _, n := range nodes {
		j, err := readJsz(ctx, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if j.Meta != nil {
			meta = j.Meta.Leader
		}
		for _, a := range j.AccountDetails {
			for _, s := range a.StreamDetail {
				if s.Name == eventsStream {
					events = s.Cluster.Leader
				}
			}
		}
		if meta != "" && events != "" {
			return meta, events, nil
		}
	}
	return meta, events, fmt.Errorf("leaders not known (meta %q, %s %q): %w", meta, eventsStream, events, errors.Join(errs...))
}

// watchLeaders reads the leaders every storeLossPoll until ctx is done and
// returns each change ("+1.2s events nats-1", "+1.5s meta nats-2"), from
// t0; a moment without a leader is "none".
func watchLeaders(ctx context.Context, nodes []natsNode, t0 time.Time) []string {
	var out []string
	var meta, events string
	first := true
	for ctx.Err() == nil {
		m, e, _ := clusterLeaders(ctx, nodes) //nolint:errcheck // a moment without a leader is what is watched
		if ctx.Err() != nil {
			break
		}
		at := time.Since(t0).Round(100 * time.Millisecond)
		for _, c := range []struct {
			what     string
			now      string
			previous *string
		}{{"events", e, &events}, {"meta", m, &meta}} {
			now := c.now
			if now == "" {
				now = "none"
			}
			if first || now != *c.previous {
				out = append(out, fmt.Sprintf("+%s %s %s", at, c.what, now))
				*c.previous = now
			}
		}
		first = false
		_ = sleepUntil(ctx, time.Now().Add(storeLossPoll)) //nolint:errcheck // the loop checks ctx
	}
	return out
}

// localJetStream returns how many streams and messages node's own store
// holds (its /jsz).
func localJetStream(ctx context.Context, node natsNode) (int, uint64, error) {
	j, err := readJsz(ctx, node)
	if err != nil {
		return 0, 0, err
	}
	return j.Streams, j.Messages, nil
}
