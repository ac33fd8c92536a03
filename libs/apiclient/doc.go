// Package apiclient is the gRPC client of the ambient API
// (ambient-api-server, package ambient.v1).
//
// It dials lazily (New never blocks), sends "authorization: Bearer <token>"
// on every call, pings idle connections (the server sends no heartbeat, so a
// dead watch stream is only found by keepalive), applies a default timeout to
// unary calls whose ctx has no deadline, lists everything with pagination
// that respects the server's clamps, and opens watch streams without waiting
// for response headers (the real server sends none until the first event).
package apiclient
