package bus

import (
	"errors"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// Answers of a JetStream server that no retry changes: the replica count
// asked for is more than the servers can place. nats.go names no constants
// for them.
const (
	// jsReplicasNotSupported: "replicas > 1 not supported in non-clustered
	// mode", from a single server.
	jsReplicasNotSupported jetstream.ErrorCode = 10074
	// jsNoSuitablePeers: "no suitable peers for placement", from a cluster
	// with fewer JetStream servers than replicas (measured: R3 on a formed
	// two-server cluster gets it at every try; on three servers with one
	// down the stream is placed).
	jsNoSuitablePeers jetstream.ErrorCode = 10005
)

// ReplicasUnplaceable reports whether err is a NATS server refusing a
// stream's or bucket's replica count because it has too few servers for
// it: a single non-clustered server asked for more than one, or a cluster
// asked for more than it has members. It is for good, unlike a Transient
// error: the servers do not multiply on their own, so it is the caller's
// replicas setting (or the NATS install) that must change.
func ReplicasUnplaceable(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jsReplicasNotSupported || apiErr.ErrorCode == jsNoSuitablePeers)
}

// ReplicasError returns err as a configuration error naming the variable
// (name) that set replicas when err is such a refusal
// (ReplicasUnplaceable), and err unchanged otherwise.
func ReplicasError(err error, name string, replicas int) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	var want string
	switch apiErr.ErrorCode {
	case jsReplicasNotSupported:
		want = "1, as the NATS server is not clustered (more replicas need a JetStream cluster of at least that many servers)"
	case jsNoSuitablePeers:
		want = "at most the number of JetStream servers in the NATS cluster, which has too few to place " + strconv.Itoa(replicas) + " replicas"
	default:
		return err
	}
	return &envconfig.VarError{Name: name, Want: want, Got: strconv.Itoa(replicas), Cause: err}
}
