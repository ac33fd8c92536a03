package testenv

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// HeldKV is a KV bucket whose watchers lag it: a watch opened through it
// delivers its initial values at once and holds every later update until
// Release. Everything else (Get, Put, ...) goes straight to the bucket. It
// puts a reader that follows the bucket by a watch (registry.Table) in the
// moment every such reader has now and then: a record written, its watch
// not there yet.
type HeldKV struct {
	jetstream.KeyValue
	released chan struct{}
	once     sync.Once
}

// HoldUpdates wraps kv; see HeldKV.
func HoldUpdates(kv jetstream.KeyValue) *HeldKV {
	return &HeldKV{KeyValue: kv, released: make(chan struct{})}
}

// Release lets the held updates through, in order, and every later one
// at once. Safe to call more than once.
func (h *HeldKV) Release() { h.once.Do(func() { close(h.released) }) }

// Watch watches keys as the bucket does, holding updates.
func (h *HeldKV) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return h.held(h.KeyValue.Watch(ctx, keys, opts...))
}

// WatchAll watches every key as the bucket does, holding updates.
func (h *HeldKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return h.held(h.KeyValue.WatchAll(ctx, opts...))
}

// WatchFiltered watches keys as the bucket does, holding updates.
func (h *HeldKV) WatchFiltered(ctx context.Context, keys []string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return h.held(h.KeyValue.WatchFiltered(ctx, keys, opts...))
}

func (h *HeldKV) held(w jetstream.KeyWatcher, err error) (jetstream.KeyWatcher, error) {
	if err != nil {
		return nil, err
	}
	hw := &heldWatcher{w: w, out: make(chan jetstream.KeyValueEntry), stop: make(chan struct{})}
	go hw.relay(h.released) // ends when w's channel closes or Stop is called
	return hw, nil
}

// heldWatcher relays a watcher's entries: the initial values (up to and
// with the nil entry that ends them) at once, the rest once released.
type heldWatcher struct {
	w        jetstream.KeyWatcher
	out      chan jetstream.KeyValueEntry
	stop     chan struct{}
	stopOnce sync.Once
}

func (hw *heldWatcher) Updates() <-chan jetstream.KeyValueEntry { return hw.out }

func (hw *heldWatcher) Stop() error {
	hw.stopOnce.Do(func() { close(hw.stop) })
	return hw.w.Stop()
}

func (hw *heldWatcher) relay(released <-chan struct{}) {
	defer close(hw.out)
	initial := true
	for {
		var e jetstream.KeyValueEntry
		select {
		case got, ok := <-hw.w.Updates():
			if !ok {
				return
			}
			e = got
		case <-hw.stop:
			return
		}
		if !initial {
			select {
			case <-released:
			case <-hw.stop:
				return
			}
		}
		if e == nil {
			initial = false
		}
		select {
		case hw.out <- e:
		case <-hw.stop:
			return
		}
	}
}
