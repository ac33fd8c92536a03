// Package controller is the informer's per-resource controller, the
// sample-controller shape: a watch loop (package watch) that only records
// the newest state per object in the cache (package diff) and adds the
// object's id to a client-go rate-limited work queue, and publish workers
// that take ids from the queue and publish what changed (package publish).
//
// One generic [Resource] serves sessions, projects and project settings.
// It runs only while this replica holds the lease ([LeadAll]); every term
// starts from the persisted cache, so a new leader publishes exactly what
// changed since the last acked event.
//
// Guarantees: the watch loop never blocks on publishing (the API drops
// events for slow watchers); an id is never handed to two workers at once,
// so one object's changes are published in order; queued changes of one
// object coalesce into its newest state; a failed publish is retried per
// object from 50 ms doubling to 5 s while other objects go on; a KV write
// that failed after its event was acked is retried before the object's
// next change, so KV never stays behind the stream.
package controller
