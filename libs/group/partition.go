package group

import (
	"hash/fnv"

	"github.com/ambient-code/control-plane/libs/events"
)

// Partition returns the partition (0..partitions-1) a subject token lands
// in. It is the same function nats-server applies in the consumer group's
// subject transform {{Partition(n,i)}}: FNV-1a 32 of the token, modulo n.
// token is the object id's token as it appears in the subject
// (events.SubjectToken).
func Partition(token string, partitions int) int {
	if partitions <= 0 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(token)) // hash.Hash.Write never returns an error
	return int(h.Sum32() % uint32(partitions))
}

// PartitionOf returns the partition of an object id (its subject token
// first, a digest token for a long id), e.g. to tell which member, canary
// or stable, owns a session.
func PartitionOf(objectID string, partitions int) int {
	return Partition(events.SubjectToken(objectID), partitions)
}
