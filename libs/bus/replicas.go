package bus

import (
	"errors"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// jsReplicasNotSupported is a non-clustered server's answer to a stream (or
// bucket) with more than one replica: "replicas > 1 not supported in
// non-clustered mode". nats.go names no constant for it.
const jsReplicasNotSupported jetstream.ErrorCode = 10074

// ReplicasNotSupported reports whether err is a non-clustered NATS server
// refusing more than one replica. It is for good, unlike a Transient
// error: a server does not become clustered without a restart with another
// configuration, so it is the caller's replicas setting that must change.
func ReplicasNotSupported(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsReplicasNotSupported
}

// ReplicasError returns err as a configuration error naming the variable
// (name) that set replicas when err is a non-clustered server's refusal
// (ReplicasNotSupported), and err unchanged otherwise.
func ReplicasError(err error, name string, replicas int) error {
	if !ReplicasNotSupported(err) {
		return err
	}
	return &envconfig.VarError{
		Name:  name,
		Want:  "1, as the NATS server is not clustered (more replicas need a JetStream cluster of at least that many servers)",
		Got:   strconv.Itoa(replicas),
		Cause: err,
	}
}
