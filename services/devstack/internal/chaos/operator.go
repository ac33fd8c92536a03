package chaos

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// operator plays the part of the AgenticSession operator the run has no
// copy of: now and then it writes the status of one AgenticSession
// (status.sdkSessionId, a field nothing else writes), as the operator does
// while a session runs. kube-reconciler must carry each write to the
// session (UpdateSessionStatus) through the faults: the replica that owns
// the session's partition writes it, and a replica that gains a killed
// one's partitions must write what the dead one left. The audit compares
// every kube session with its AgenticSession's status at the end.
//
// Its writes are spread over the schedule up to the quiet window before the
// kube-apiserver outage: a status write-back makes a session event, and
// the outage's victims must be first in kube-reconciler's queues.
type operator struct {
	kube *kubePlane
	rng  *rand.Rand
	log  func(format string, args ...any)

	mu    sync.Mutex
	stats operatorStats // guarded by mu
}

// operatorStats counts the operator's status writes.
type operatorStats struct {
	// Writes were made; Failed were not (an API error); Skipped found no
	// AgenticSession to write (early in the run).
	Writes, Failed, Skipped int
	// Last is the last value written on each session's AgenticSession.
	Last map[string]string
}

// errNoCR: there was no AgenticSession to write yet.
var errNoCR = errors.New("no AgenticSession to write")

// operatorWrites is how many status writes a run of changes API changes
// makes.
func operatorWrites(changes int) int { return max(10, changes/10) }

func newOperator(kube *kubePlane, seed int64, log func(format string, args ...any)) *operator {
	// Its own stream of choices: the change schedule of a seed stays the
	// same with or without it.
	return &operator{kube: kube, rng: rand.New(rand.NewPCG(uint64(seed), 0x6f70)), log: log} //nolint:gosec // a reproducible schedule, not a secret
}

// run makes n writes evenly spread over [t0, t0+until).
func (o *operator) run(ctx context.Context, t0 time.Time, until time.Duration, n int) error {
	for i := range n {
		if err := sleepUntil(ctx, t0.Add(until*time.Duration(i)/time.Duration(n))); err != nil {
			return err
		}
		value := "chaos-op-" + strconv.Itoa(i+1)
		sid, err := o.write(ctx, value)
		o.mu.Lock()
		switch {
		case errors.Is(err, errNoCR):
			o.stats.Skipped++
			err = nil
		case err != nil:
			o.stats.Failed++
		default:
			o.stats.Writes++
			if o.stats.Last == nil {
				o.stats.Last = map[string]string{}
			}
			o.stats.Last[sid] = value
		}
		o.mu.Unlock()
		if err != nil {
			// Not a failure of the run: the audit judges what the API holds
			// against what the AgenticSessions hold, whoever wrote last.
			o.log("chaos: operator status write %d: %v\n", i+1, err)
		}
	}
	return nil
}

// write sets status.sdkSessionId of one AgenticSession, picked at random,
// and returns its session.
func (o *operator) write(ctx context.Context, value string) (string, error) {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	crs, err := o.kube.sessionCRs(wctx)
	if err != nil {
		return "", err
	}
	if len(crs) == 0 {
		return "", errNoCR
	}
	cr := crs[o.rng.IntN(len(crs))]
	return cr.Session, o.kube.setSDKSessionID(wctx, cr, value)
}

// Stats returns the counts so far.
func (o *operator) Stats() operatorStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.stats
	st.Last = maps.Clone(o.stats.Last)
	return st
}
