// Package watch runs the list+watch loop of one resource without gaps.
//
// Each cycle opens the watch stream first and buffers everything it
// delivers, then lists every page, then hands the list and the buffered
// events to the cache (diff.Store.Sync) in one step, then applies live
// events as they come. Because the stream is open before the list starts,
// nothing that changes during the list is missed; events older than the
// list are dropped by the cache. The real server has no resume point, so
// every reconnect (and every periodic resync) is a new cycle with a new
// list. The receive goroutine only appends to an unbounded buffer: it never
// waits on the cache or on publishing, so the server never has to drop
// events for us (its per-watcher buffer holds 256).
package watch
