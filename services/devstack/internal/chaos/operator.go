package chaos

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
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
	rng  *rand.Rand // run's picks; only run uses it
	// downRng picks the targets of writeWhileDown, which the injector calls
	// while run goes on: a stream of its own, so neither needs a lock.
	downRng *rand.Rand
	log     func(format string, args ...any)

	// writing serializes write and writeWhileDown, each from its listing
	// to its last patch: a regular write picked before the writes while
	// down must not land after them on one of their sessions.
	writing sync.Mutex
	mu      sync.Mutex
	stats   operatorStats // guarded by mu
}

// operatorStats counts the operator's status writes.
type operatorStats struct {
	// Writes were made; Failed were not (an API error); Skipped found no
	// AgenticSession to write (early in the run).
	Writes, Failed, Skipped int
	// Last is the last value written on each session's AgenticSession.
	Last map[string]string
	// Down are the sessions written while a kube-reconciler replica was
	// dead (writeWhileDown), which the driver leaves alone so that they
	// live to the audit; DownDead are those of Down in the dead replica's
	// partitions. DownMissed counts the downtimes in which no write landed
	// in the dead replica's partitions: none of its sessions existed, its
	// partitions could not be read, or the writes failed.
	Down, DownDead []string
	DownMissed     int
}

// madeLocked records value written on session's AgenticSession; o.mu is
// held.
func (o *operator) madeLocked(session, value string) {
	o.stats.Writes++
	if o.stats.Last == nil {
		o.stats.Last = map[string]string{}
	}
	o.stats.Last[session] = value
}

// errNoCR: there was no AgenticSession to write yet.
var errNoCR = errors.New("no AgenticSession to write")

// operatorWrites is how many status writes a run of changes API changes
// makes.
func operatorWrites(changes int) int { return max(10, changes/10) }

func newOperator(kube *kubePlane, seed int64, log func(format string, args ...any)) *operator {
	// Its own stream of choices: the change schedule of a seed stays the
	// same with or without it.
	return &operator{kube: kube, log: log,
		rng:     rand.New(rand.NewPCG(uint64(seed), 0x6f70)),     //nolint:gosec // a reproducible schedule, not a secret
		downRng: rand.New(rand.NewPCG(uint64(seed), 0x646f776e)), //nolint:gosec // as above
	}
}

// downWrites is how many status writes writeWhileDown makes.
const downWrites = 6

// writeWhileDown makes downWrites status writes at once, while the
// kube-reconciler replica target is dead (kill -9, before its restart), on
// AgenticSessions of sessions keep holds back from the driver's changes
// (keep reports false for a session it cannot: unknown, deleted, local).
// The kube witnesses are always among the candidates. Sessions of the dead
// replica's partitions (inDead; nil when the mapping could not be read)
// come first: their writes can only reach their sessions through the
// failover, as the replica that gains the partition, a new process of the
// same one or the other, checks its CRs at once. Without keep most of these
// sessions would be deleted before the audit, which then could not tell
// whether the write was carried. It returns a note for the fault's record
// and the values it wrote in the dead replica's partitions, by session.
func (o *operator) writeWhileDown(ctx context.Context, target string, keep, inDead func(session string) bool) (string, map[string]string) {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	o.writing.Lock()
	defer o.writing.Unlock()
	crs, err := o.kube.sessionCRs(wctx)
	if err != nil {
		return "operator: " + err.Error(), nil
	}
	o.downRng.Shuffle(len(crs), func(i, j int) { crs[i], crs[j] = crs[j], crs[i] })
	dead := func(cr crRef) bool { return inDead != nil && inDead(cr.Session) }
	slices.SortStableFunc(crs, func(a, b crRef) int {
		switch da, db := dead(a), dead(b); {
		case da == db:
			return 0
		case da:
			return -1
		default:
			return 1
		}
	})
	made, failed := 0, 0
	inDeadMade := map[string]string{}
	for _, cr := range crs {
		if made == downWrites {
			break
		}
		if !keep(cr.Session) {
			continue
		}
		value := fmt.Sprintf("chaos-op-%s-down-%d", target, made+1)
		err := o.kube.setSDKSessionID(wctx, cr, value)
		o.mu.Lock()
		if err != nil {
			o.stats.Failed++
			failed++
		} else {
			made++
			o.madeLocked(cr.Session, value)
			o.stats.Down = append(o.stats.Down, cr.Session)
			if dead(cr) {
				inDeadMade[cr.Session] = value
				o.stats.DownDead = append(o.stats.DownDead, cr.Session)
			}
		}
		o.mu.Unlock()
		if err != nil {
			o.log("chaos: operator status write while %s was down: %v\n", target, err)
		}
	}
	if len(inDeadMade) == 0 {
		o.mu.Lock()
		o.stats.DownMissed++
		o.mu.Unlock()
	}
	return fmt.Sprintf("operator: %d status writes while down (%d in its partitions), %d failed", made, len(inDeadMade), failed), inDeadMade
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
			o.madeLocked(sid, value)
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

// write sets status.sdkSessionId of one AgenticSession, picked at random
// among those not written while a kube-reconciler was down
// (regularTargets), and returns its session.
func (o *operator) write(ctx context.Context, value string) (string, error) {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	o.writing.Lock()
	defer o.writing.Unlock()
	crs, err := o.kube.sessionCRs(wctx)
	if err != nil {
		return "", err
	}
	o.mu.Lock()
	crs = regularTargets(crs, o.stats.Down)
	o.mu.Unlock()
	if len(crs) == 0 {
		return "", errNoCR
	}
	cr := crs[o.rng.IntN(len(crs))]
	return cr.Session, o.kube.setSDKSessionID(wctx, cr, value)
}

// regularTargets drops from crs the AgenticSessions of the sessions written
// while a kube-reconciler was down (down): what was written then is what
// must reach the API (before the restart, when the peer takes over) and
// live to the audit, so no later write of the operator may replace it.
func regularTargets(crs []crRef, down []string) []crRef {
	return slices.DeleteFunc(crs, func(cr crRef) bool { return slices.Contains(down, cr.Session) })
}

// Stats returns the counts so far.
func (o *operator) Stats() operatorStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.stats
	st.Last = maps.Clone(o.stats.Last)
	st.Down = slices.Clone(o.stats.Down)
	st.DownDead = slices.Clone(o.stats.DownDead)
	return st
}
