// Package apiclient is the client of the ambient API (ambient-api-server,
// package ambient.v1): Client speaks gRPC, RESTClient the REST calls that
// have no RPC (session start and stop, with the server's phase guards).
//
// Client dials lazily (New never blocks), sends "authorization: Bearer <token>"
// on every call (a token given as a file, Config.TokenFile, is checked with
// one stat per call and read again once a rotated Secret replaced it),
// pings a connection whose watch streams see no traffic (the server sends
// no heartbeat, so a dead watch stream is only found by keepalive) no more
// often than the real server's policy allows, and never a connection
// without an open call, applies a default timeout to unary calls whose ctx
// has no deadline, lists everything with pagination
// that respects the server's clamps, and opens watch streams without waiting
// for response headers (the real server sends none until the first event).
//
// RESTClient reads the real server's JSON (package restapi): flat objects,
// and error objects returned as *restapi.Error with the HTTP status, so a
// caller can show the server's reason for a refused start or stop.
package apiclient
