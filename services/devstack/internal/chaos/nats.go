package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/registry"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/devstack/internal/proc"
)

// natsReplicas is the cluster size and the replica count of every stream
// and bucket: what the chart's bundled NATS runs (3 nodes, R3).
const natsReplicas = 3

// natsNode is one nats-server of the loopback cluster.
type natsNode struct {
	Name        string
	ClientPort  int
	ClusterPort int
	MonitorPort int
	StoreDir    string
}

func (n natsNode) clientURL() string  { return "nats://127.0.0.1:" + strconv.Itoa(n.ClientPort) }
func (n natsNode) monitorURL() string { return "http://127.0.0.1:" + strconv.Itoa(n.MonitorPort) }

// natsConfig renders node's configuration file: JetStream on its own store,
// clustered with the other nodes over routes on loopback. Everything else is
// the server's default, as in the chart (max_payload 1 MiB).
func natsConfig(node natsNode, all []natsNode) string {
	var routes []string
	for _, o := range all {
		if o.Name != node.Name {
			routes = append(routes, strconv.Quote("nats-route://127.0.0.1:"+strconv.Itoa(o.ClusterPort)))
		}
	}
	return fmt.Sprintf(`server_name: %s
host: 127.0.0.1
port: %d
http: "127.0.0.1:%d"
jetstream {
  store_dir: %s
}
cluster {
  name: ambient-chaos
  host: 127.0.0.1
  port: %d
  routes: [%s]
}
`, node.Name, node.ClientPort, node.MonitorPort, strconv.Quote(node.StoreDir), node.ClusterPort, strings.Join(routes, ", "))
}

func writeNATSConfig(dir string, node natsNode, all []natsNode) (string, error) {
	path := filepath.Join(dir, node.Name+".conf")
	if err := os.WriteFile(path, []byte(natsConfig(node, all)), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

// natsProbe wants the node healthy as JetStream sees it: connected to the
// meta leader, its streams current (/healthz).
func natsProbe(n natsNode) proc.Probe {
	return proc.HTTPProbe(&http.Client{Timeout: 2 * time.Second}, n.monitorURL()+"/healthz", "")
}

// jszStreams is the part of /jsz?streams=true this harness reads.
type jszStreams struct {
	AccountDetails []struct {
		StreamDetail []struct {
			Name    string `json:"name"`
			Cluster struct {
				Leader string `json:"leader"`
			} `json:"cluster"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

// streamLeader asks the nodes which of them leads stream; the issue's
// node-loss finding killed the events stream's leader.
func streamLeader(ctx context.Context, nodes []natsNode, stream string) (string, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	var errs []error
	for _, n := range nodes {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.monitorURL()+"/jsz?streams=true", nil)
		if err != nil {
			return "", fmt.Errorf("build jsz request: %w", err)
		}
		resp, err := client.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var j jszStreams
		err = json.NewDecoder(resp.Body).Decode(&j)
		_ = resp.Body.Close() //nolint:errcheck // read to the end already
		if err != nil {
			errs = append(errs, fmt.Errorf("decode jsz of %s: %w", n.Name, err))
			continue
		}
		for _, a := range j.AccountDetails {
			for _, s := range a.StreamDetail {
				if s.Name == stream && s.Cluster.Leader != "" {
					return s.Cluster.Leader, nil
				}
			}
		}
	}
	return "", fmt.Errorf("no leader of %s known: %w", stream, errors.Join(errs...))
}

// natsView is the harness' own NATS client: reads only.
type natsView struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func connectNATS(urls string) (*natsView, error) {
	nc, err := nats.Connect(urls, nats.Name("chaos-harness"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("connect NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &natsView{nc: nc, js: js}, nil
}

func (v *natsView) Close() { v.nc.Close() }

// streamInfo is one stream (a KV bucket is the stream KV_<bucket>).
type streamInfo struct {
	Name     string
	Replicas int
	Msgs     uint64
}

func (v *natsView) streams(ctx context.Context) ([]streamInfo, error) {
	var out []streamInfo
	lister := v.js.ListStreams(ctx)
	for si := range lister.Info() {
		out = append(out, streamInfo{Name: si.Config.Name, Replicas: si.Config.Replicas, Msgs: si.State.Msgs})
	}
	if err := lister.Err(); err != nil {
		return out, fmt.Errorf("list streams: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// runnerRecords reads KV ambient-runners: session id -> endpoint record.
func (v *natsView) runnerRecords(ctx context.Context) (map[string]registry.Endpoint, error) {
	kv, err := v.js.KeyValue(ctx, bus.BucketRunners)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", bus.BucketRunners, err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", bus.BucketRunners, err)
	}
	out := map[string]registry.Endpoint{}
	for key := range lister.Keys() {
		if strings.Contains(key, ".") {
			continue // another key space of the bucket (libs/registry)
		}
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("get %s/%s: %w", bus.BucketRunners, key, err)
		}
		ep, err := registry.Decode(e.Value())
		if err != nil {
			continue // not a record this harness can read; the audit reads the process table first
		}
		out[ep.SessionID] = ep
	}
	return out, nil
}

// partitionsOf returns whether an object belongs to a partition member of
// the consumer group groupName owns, by the group's mapping as its members
// last wrote it (a dead member keeps its partitions there until its
// heartbeat expires).
func (v *natsView) partitionsOf(ctx context.Context, groupName, member string) (func(objectID string) bool, error) {
	owned, n, err := v.mapping(ctx, groupName, member)
	if err != nil {
		return nil, err
	}
	return func(id string) bool { return slices.Contains(owned, group.PartitionOf(id, n)) }, nil
}

// ownedPartitions returns the partitions member owns in the mapping of the
// consumer group groupName, as its members last wrote it.
func (v *natsView) ownedPartitions(ctx context.Context, groupName, member string) ([]int, error) {
	owned, _, err := v.mapping(ctx, groupName, member)
	return owned, err
}

// mapping returns member's partitions in groupName's mapping and the
// partition count.
func (v *natsView) mapping(ctx context.Context, groupName, member string) ([]int, int, error) {
	cfg, err := pcgroups.GetElasticConsumerGroupConfig(ctx, v.js, eventsStream, groupName)
	if err != nil {
		return nil, 0, fmt.Errorf("read the mapping of group %s: %w", groupName, err)
	}
	var owned []int
	for _, mm := range cfg.MemberMappings {
		if mm.Member == member {
			owned = mm.Partitions
		}
	}
	return owned, int(cfg.MaxMembers), nil //nolint:gosec // the partition count, 16 here
}

// informerLeaseKey is the informers' lease key in KV ambient-leases (their
// default LEASE_KEY); its value is the holder's INSTANCE_ID.
const informerLeaseKey = "informer"

// leaseHolder returns the informer holding the lease ("" when nobody does).
func (v *natsView) leaseHolder(ctx context.Context) (string, error) {
	kv, err := v.js.KeyValue(ctx, bus.BucketLeases)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", bus.BucketLeases, err)
	}
	e, err := kv.Get(ctx, informerLeaseKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("get %s/%s: %w", bus.BucketLeases, informerLeaseKey, err)
	}
	return string(e.Value()), nil
}

// streamEvent is one message of the events stream, as the order check
// and the objects bucket check read it.
type streamEvent struct {
	Seq     uint64
	At      time.Time
	Key     string // resource/object id
	Type    string // ADDED, MODIFIED, DELETED
	Version string
	// Ref: a reference event (the object alone over the payload limit:
	// events.Decode's ErrObjectTooLarge), which names the version but
	// carries no state.
	Ref bool
	// Replayed: a dead letter published again for one consumer group
	// (group.HeaderReplayGroup), a copy of an older event of the object.
	Replayed bool
}

// readEvents reads the events stream in order from the sequence after
// after (0: the whole stream) to its end, and returns the stream's first
// sequence (above 1 when events aged out or were removed). A message that
// does not decode as an event is returned with Type "undecodable".
func (v *natsView) readEvents(ctx context.Context, after uint64) ([]streamEvent, uint64, error) {
	st, err := v.js.Stream(ctx, eventsStream)
	if err != nil {
		return nil, 0, fmt.Errorf("open stream %s: %w", eventsStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("stream %s info: %w", eventsStream, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if last <= after {
		return nil, first, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1})
	if err != nil {
		return nil, first, fmt.Errorf("ordered consumer on %s: %w", eventsStream, err)
	}
	// One subscription for the whole read: every Fetch of an ordered
	// consumer deletes and creates its consumer again (a cluster metadata
	// change each 500 messages).
	it, err := cons.Messages()
	if err != nil {
		return nil, first, fmt.Errorf("read %s: %w", eventsStream, err)
	}
	defer it.Stop()
	var out []streamEvent
	for {
		msg, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			return out, first, fmt.Errorf("read %s after sequence %d up to %d, %d read: %w", eventsStream, after, last, len(out), err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return out, first, fmt.Errorf("message metadata: %w", err)
		}
		e := streamEvent{Seq: meta.Sequence.Stream, At: meta.Timestamp, Type: "undecodable"}
		if _, ev, derr := events.Decode(ctx, msg.Headers(), msg.Data()); ev != nil && (derr == nil || errors.Is(derr, events.ErrObjectTooLarge)) {
			e.Key = events.ResourceToken(ev.GetResource()) + "/" + ev.GetObjectId()
			e.Type, e.Version = events.TypeName(ev.GetType()), ev.GetVersion()
			e.Ref = derr != nil
			e.Replayed = msg.Headers().Get(group.HeaderReplayGroup) != ""
		}
		out = append(out, e)
		if e.Seq >= last {
			return out, first, nil
		}
	}
}

// readEventsRetrying is readEvents, read again while it fails, every
// poll for up to limit, each time on from what was read: at the end of a
// run that just lost and regained NATS nodes, one read of the stream
// failed with "no responders" (then one of the ordered consumer's
// recreations per 500 messages) while every service had long recovered. The last error is returned when the
// stream stays unreadable.
func (v *natsView) readEventsRetrying(ctx context.Context, after uint64, limit, poll time.Duration) ([]streamEvent, uint64, error) {
	begun := time.Now()
	var out []streamEvent
	for {
		evs, first, err := v.readEvents(ctx, after)
		out = append(out, evs...)
		if n := len(evs); n > 0 {
			after = evs[n-1].Seq
		}
		if err == nil || time.Since(begun) >= limit {
			return out, first, err
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return out, first, errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// objectsBucket is the informers' objects bucket (their default
// OBJECTS_BUCKET for the live stream; the harness sets no other).
var objectsBucket = bus.ObjectsBucketFor(eventsStream)

// owedKeyPrefix starts the keys of the objects bucket that are not an
// object's: the informer's owed-write floor per resource
// (services/informer/internal/publish/owed.go).
const owedKeyPrefix = "informer-owed."

// kvEntry is one live entry of the objects bucket, as the objects bucket
// check reads it.
type kvEntry struct {
	// Key is resource/object id, as streamEvent.Key; the raw key when Err
	// is set.
	Key string
	// Version is events.Version of the object held; EventSeq its
	// event_seq (the stream sequence of the event that published it).
	Version  string
	EventSeq uint64
	Revision uint64
	// Err: the entry is not an object's state (a key that is no object
	// key, a value that does not decode, an object of another key).
	Err string
}

// decodeObjectEntry reads one entry of the objects bucket; false for a key
// that is not an object's by design (the owed-write floor).
func decodeObjectEntry(key string, value []byte, revision uint64) (kvEntry, bool) {
	if strings.HasPrefix(key, owedKeyPrefix) {
		return kvEntry{}, false
	}
	e := kvEntry{Key: key, Revision: revision}
	res, id, err := events.ParseObjectKey(key)
	if err != nil {
		e.Err = "not an object key: " + err.Error()
		return e, true
	}
	var o eventsv1.Object
	if err := proto.Unmarshal(value, &o); err != nil {
		e.Err = "value does not decode as an Object: " + err.Error()
		return e, true
	}
	m := events.Message(&o)
	if m == nil {
		e.Err = "value holds no object"
		return e, true
	}
	if got, gotID := events.ResourceOfObject(&o), events.ObjectID(&o); got != res || gotID != id {
		e.Err = fmt.Sprintf("value holds %s/%s", events.ResourceToken(got), gotID)
		return e, true
	}
	e.Key = events.ResourceToken(res) + "/" + id
	e.Version = events.Version(events.UpdatedAt(&o), m)
	e.EventSeq = o.GetEventSeq()
	return e, true
}

// readObjects reads every live entry of the objects bucket (deleted and
// purged keys are not listed), in one pass of a watch.
func (v *natsView) readObjects(ctx context.Context) ([]kvEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	kv, err := v.js.KeyValue(ctx, objectsBucket)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", objectsBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", objectsBucket, err)
	}
	defer func() { _ = w.Stop() }() //nolint:errcheck // best effort: the consumer is ephemeral
	var out []kvEntry
	for {
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("read %s: %w", objectsBucket, ctx.Err())
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return out, fmt.Errorf("read %s: the watch ended", objectsBucket)
			case e == nil:
				return out, nil // every key's last entry delivered
			}
			if en, ok := decodeObjectEntry(e.Key(), e.Value(), e.Revision()); ok {
				out = append(out, en)
			}
		}
	}
}

// kvAgreeLimit bounds how long the objects bucket check waits for the
// bucket to agree with the stream, polling every kvAgreePoll: the
// informer writes KV after each ack without waiting, and retries an owed
// write with backoff (up to 5 s), so a mismatch at the first read may
// still be a write in flight.
const (
	kvAgreeLimit = 30 * time.Second
	kvAgreePoll  = time.Second
)

// readObjectsAgreeing reads the objects bucket and compares it with the
// events stream (evs, read from its first sequence first; err: that read
// failed) until they agree or limit passes, reading what the stream gained
// since before each new comparison.
func (v *natsView) readObjectsAgreeing(ctx context.Context, evs []streamEvent, first uint64, evsErr error, limit, poll time.Duration) objectsRead {
	rd := objectsRead{Events: evs, FirstSeq: first, Err: evsErr}
	begun := time.Now()
	for {
		rd.Entries, rd.Err = v.readObjects(ctx)
		rd.Reads++
		rd.Waited = time.Since(begun)
		if evsErr != nil {
			rd.Err = errors.Join(evsErr, rd.Err)
			return rd
		}
		if rd.Err != nil || len(compareObjects(rd.Events, rd.FirstSeq, rd.Entries).Mismatches) == 0 || rd.Waited >= limit {
			return rd
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			rd.Err = ctx.Err()
			return rd
		case <-t.C:
		}
		var after uint64
		if n := len(rd.Events); n > 0 {
			after = rd.Events[n-1].Seq
		}
		more, first, err := v.readEventsRetrying(ctx, after, limit, poll)
		rd.Events, rd.FirstSeq = append(rd.Events, more...), first
		if err != nil {
			rd.Err = fmt.Errorf("read the events stream again: %w", err)
			return rd
		}
	}
}

// eventsStream is the stream the informer publishes to.
const eventsStream = events.StreamName
