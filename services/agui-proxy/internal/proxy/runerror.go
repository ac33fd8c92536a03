package proxy

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net"

	"google.golang.org/protobuf/encoding/protowire"
)

// runEnd is why the proxy itself ended a stream its runner had not ended.
type runEnd int

const (
	// endRunnerGone: the session's endpoint left the routing table (the
	// session stopped) or now names another runner process (it moved).
	endRunnerGone runEnd = iota
	// endShutdown: the proxy's shutdown grace is over.
	endShutdown
	// endIncomplete: the runner ended a run's response cleanly before the
	// run's RUN_FINISHED or RUN_ERROR (the demo runner does when it is
	// stopped mid-run: runner-manager's SIGTERM cancels the run).
	endIncomplete
	// endRevoked: the stream's request is no longer authenticated or
	// authorized (Config.RecheckEvery).
	endRevoked
)

// runError is the RUN_ERROR the proxy adds for a runEnd.
type runError struct {
	Code    string
	Message string
}

var runErrors = [...]runError{
	endRunnerGone: {Code: "RUNNER_GONE", Message: "the session's runner stopped or moved; the run did not finish"},
	endShutdown:   {Code: "PROXY_SHUTDOWN", Message: "agui-proxy is shutting down; retry the request"},
	endIncomplete: {Code: "RUN_INCOMPLETE", Message: "the runner ended the run's stream before the run finished"},
	endRevoked:    {Code: "ACCESS_REVOKED", Message: "access to the session was revoked or the credentials expired; the stream ended"},
}

// runErrorFrames are the encoded RUN_ERROR frames, built once: writing one
// allocates nothing.
var runErrorFrames = func() (f [len(runErrors)][encodingProto + 1][]byte) {
	for why, e := range runErrors {
		f[why][encodingSSE] = sseRunError(e)
		f[why][encodingProto] = protoRunError(e)
	}
	return f
}()

// sseRunError is e as one SSE frame: the RunErrorEvent of @ag-ui/core
// (type, message, optional code), as its encoder writes events.
func sseRunError(e runError) []byte {
	// Marshalling a struct of strings cannot fail.
	b, _ := json.Marshal(struct {
		Type    string `json:"type"`
		Message string `json:"message"`
		Code    string `json:"code"`
	}{Type: "RUN_ERROR", Message: e.Message, Code: e.Code})
	frame := append([]byte("data: "), b...)
	return append(frame, "\n\n"...)
}

// Field numbers of AG-UI's events.proto (@ag-ui/proto 1.0.0).
const (
	protoEventRunFinished  = 13 // Event.run_finished, a RunFinishedEvent
	protoEventRunError     = 14 // Event.run_error, a RunErrorEvent
	protoRunErrorBaseEvent = 1  // RunErrorEvent.base_event, a BaseEvent
	protoRunErrorCode      = 2  // RunErrorEvent.code, optional string
	protoRunErrorMessage   = 3  // RunErrorEvent.message, string
	protoBaseEventType     = 1  // BaseEvent.type, an EventType
	protoEventTypeRunError = 13 // EventType.RUN_ERROR
)

// protoRunError is e as one frame of AG-UI's binary encoding: a 4-byte
// big-endian length, then an Event whose run_error arm holds a
// RunErrorEvent with its BaseEvent's type, its code and its message. The
// official decoder requires the arm and the base event's type to agree.
//
// Why a frame and not an abort: the schema of these three fields is small
// and fixed, the frame boundary is exact (a length prefix, unlike SSE's
// text framing), and the official decoder reads the frame the tests make
// (TestOfficialClientRunnerGone), so the client learns why its run ended
// instead of only that its connection failed.
func protoRunError(e runError) []byte {
	var base []byte
	base = protowire.AppendTag(base, protoBaseEventType, protowire.VarintType)
	base = protowire.AppendVarint(base, protoEventTypeRunError)
	var ev []byte
	ev = protowire.AppendTag(ev, protoRunErrorBaseEvent, protowire.BytesType)
	ev = protowire.AppendBytes(ev, base)
	ev = protowire.AppendTag(ev, protoRunErrorCode, protowire.BytesType)
	ev = protowire.AppendString(ev, e.Code)
	ev = protowire.AppendTag(ev, protoRunErrorMessage, protowire.BytesType)
	ev = protowire.AppendString(ev, e.Message)
	var msg []byte
	msg = protowire.AppendTag(msg, protoEventRunError, protowire.BytesType)
	msg = protowire.AppendBytes(msg, ev)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	return append(frame, msg...)
}

// serverDoneKey holds, in a connection's context, the Done channel of the
// server's base context (see ConnContext).
type serverDoneKey struct{}

// ConnContext is http.Server.ConnContext for the server the Proxy serves
// on. It keeps the server's base context's Done channel, which health.Serve
// closes when the shutdown grace is over: a request's context ends then,
// as it does when its client leaves, and only this tells the two apart, so
// that a stream cut by the shutdown gets its RUN_ERROR (PROXY_SHUTDOWN).
// Without it such a stream ends as if its client had left (cleanly, with
// nothing added).
func ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, serverDoneKey{}, ctx.Done())
}

// serverStopping reports whether the server's base context ended (see
// ConnContext).
func serverStopping(ctx context.Context) bool {
	done, _ := ctx.Value(serverDoneKey{}).(<-chan struct{})
	if done == nil {
		return false
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}
