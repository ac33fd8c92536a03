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

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/registry"
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
// reads it.
type streamEvent struct {
	Seq     uint64
	At      time.Time
	Key     string // resource/object id
	Type    string // ADDED, MODIFIED, DELETED
	Version string
}

// readEvents reads the whole events stream in order. A message that does
// not decode as an event is returned with Type "undecodable".
func (v *natsView) readEvents(ctx context.Context) ([]streamEvent, error) {
	st, err := v.js.Stream(ctx, eventsStream)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", eventsStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", eventsStream, err)
	}
	last := info.State.LastSeq
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer on %s: %w", eventsStream, err)
	}
	var out []streamEvent
	for last > 0 {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return out, fmt.Errorf("fetch from %s: %w", eventsStream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return out, fmt.Errorf("message metadata: %w", err)
			}
			e := streamEvent{Seq: meta.Sequence.Stream, At: meta.Timestamp, Type: "undecodable"}
			if _, ev, derr := events.Decode(ctx, msg.Headers(), msg.Data()); ev != nil && (derr == nil || errors.Is(derr, events.ErrObjectTooLarge)) {
				e.Key = events.ResourceToken(ev.GetResource()) + "/" + ev.GetObjectId()
				e.Type, e.Version = events.TypeName(ev.GetType()), ev.GetVersion()
			}
			out = append(out, e)
			if e.Seq >= last {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil {
			return out, fmt.Errorf("fetch from %s: %w", eventsStream, err)
		}
		if n == 0 {
			return out, fmt.Errorf("read %s up to sequence %d of %d: no more messages", eventsStream, len(out), last)
		}
	}
	return out, nil
}

// eventsStream is the stream the informer publishes to.
const eventsStream = events.StreamName
