package proxy

import (
	"bytes"
	"encoding/binary"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// streamEncoding is how a stream's body frames its AG-UI events, told by
// the runner's Content-Type.
type streamEncoding uint8

const (
	// encodingOther is a body whose framing the proxy does not know (a
	// runner's JSON error, or anything else): it cannot add an event to it.
	encodingOther streamEncoding = iota
	// encodingSSE is text/event-stream: "data: {json}" lines, each event
	// ended by a blank line.
	encodingSSE
	// encodingProto is AG-UI's binary encoding: per event a 4-byte
	// big-endian length, then an ag_ui Event message of that length.
	encodingProto
)

func (e streamEncoding) String() string {
	switch e {
	case encodingSSE:
		return "sse"
	case encodingProto:
		return "proto"
	default:
		return "other"
	}
}

// encodingOf returns the encoding a Content-Type names (case-insensitive,
// parameters ignored).
func encodingOf(contentType string) streamEncoding {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(mt)
	switch {
	case strings.EqualFold(mt, "text/event-stream"):
		return encodingSSE
	case strings.EqualFold(mt, aguiProtoMediaType):
		return encodingProto
	default:
		return encodingOther
	}
}

// eventFrames follows the frames of a relayed AG-UI event stream, chunk by
// chunk as the relay writes them, so that a stream the proxy ends itself
// can be told apart: between two frames or inside one, and whether its last
// event was RUN_FINISHED or RUN_ERROR (the run is over: nothing to add). It
// never allocates, and a chunk costs little next to its write: SSE, two
// vectorised scans for line ends per line and a look at the first bytes of
// each event's data; proto, a few operations per frame, whatever its size.
// Not safe for concurrent use.
type eventFrames struct {
	enc   streamEncoding
	sse   sseFrames
	proto protoFrames
}

// add follows the bytes b, the next ones written to the client.
func (f *eventFrames) add(b []byte) {
	switch f.enc {
	case encodingSSE:
		f.sse.add(b)
	case encodingProto:
		f.proto.add(b)
	case encodingOther:
	}
}

// atBoundary reports whether the bytes so far end between two frames (or
// there are none), where a frame may be added. Always false for
// encodingOther.
func (f *eventFrames) atBoundary() bool {
	switch f.enc {
	case encodingSSE:
		return f.sse.tail.atBoundary()
	case encodingProto:
		return f.proto.atBoundary()
	default:
		return false
	}
}

// terminal reports whether the last complete event was RUN_FINISHED or
// RUN_ERROR. Events, not frames: an SSE comment (a keep-alive) or a frame
// without data leaves it as it was; the next event of any other type
// (a new run's RUN_STARTED) clears it.
func (f *eventFrames) terminal() bool {
	switch f.enc {
	case encodingSSE:
		return f.sse.terminal
	case encodingProto:
		return f.proto.terminal
	default:
		return false
	}
}

// sseHeadMax is how much of an SSE frame is looked at: the start of a frame
// split across reads is kept up to this many bytes, and a frame in one
// chunk is looked at no further, so the answer never depends on how the
// stream was cut into reads. The official encoders write the event's
// "type" first, a dozen bytes in; this leaves room for id and event lines
// and for members before it.
const sseHeadMax = 512

// sseFrames follows an SSE stream. Frame boundaries are those of frameTail
// (the stream ends with a blank line, in any mix of SSE's line ends: see
// endsFrame), which keep-alive comments wait for, checked at each line end
// of the stream.
type sseFrames struct {
	tail frameTail
	// head holds the start of the frame in progress, when it began in an
	// earlier chunk; headLen > 0 exactly while a frame is in progress.
	head     [sseHeadMax]byte
	headLen  int
	terminal bool
}

func (s *sseFrames) add(b []byte) {
	start := 0 // the frame in progress begins at b[start:]
	// Only a line end can end a frame. In b's first two bytes it may
	// complete a boundary begun in the previous chunk.
	for j := range min(len(b), 2) {
		if (b[j] == '\n' || b[j] == '\r') && s.boundaryAt(b, j) {
			s.frameEnded(b[start : j+1])
			start = j + 1
		}
	}
	if bytes.IndexByte(b, '\r') < 0 {
		// Nearly every chunk: no '\r', so only "\n\n" ends a frame after
		// b[1], and one vectorised search per frame finds it.
		for k := 1; k+1 < len(b); k++ { // b[k:k+2] == "\n\n" ends a frame at b[k+1]
			m := bytes.Index(b[k:], lflf)
			if m < 0 {
				break
			}
			k += m
			s.frameEnded(b[start : k+2])
			start = k + 2
		}
	} else {
		for i := 2; i < len(b); {
			j := indexLineEnd(b[i:])
			if j < 0 {
				break
			}
			j += i
			if s.boundaryAt(b, j) {
				s.frameEnded(b[start : j+1])
				start = j + 1
			}
			i = j + 1
		}
	}
	s.tail.add(b)
	if start < len(b) {
		s.keep(b[start:])
	}
}

var lflf = []byte("\n\n")

// boundaryAt reports whether the stream is at a frame boundary after b[j],
// with frameTail's rule; before b, the stream ended with tail.
func (s *sseFrames) boundaryAt(b []byte, j int) bool {
	if j >= 2 {
		return endsFrame(b[j-2 : j+1])
	}
	t := s.tail
	t.add(b[:j+1])
	return t.atBoundary()
}

// frameEnded looks at the frame that ends with b (and began with head,
// when it began in an earlier chunk).
func (s *sseFrames) frameEnded(b []byte) {
	frame := b
	if s.headLen > 0 {
		s.keep(b)
		frame = s.head[:s.headLen]
		s.headLen = 0
	}
	if event, terminal := classifySSE(frame[:min(len(frame), sseHeadMax)]); event {
		s.terminal = terminal
	}
}

func (s *sseFrames) keep(b []byte) { s.headLen += copy(s.head[s.headLen:], b) }

// indexLineEnd returns the index of the first '\r' or '\n' in b, or -1.
// Two IndexByte calls are vectorised; IndexAny is not.
func indexLineEnd(b []byte) int {
	n := bytes.IndexByte(b, '\n')
	lim := b
	if n >= 0 {
		lim = b[:n]
	}
	if r := bytes.IndexByte(lim, '\r'); r >= 0 {
		return r
	}
	return n
}

// classifySSE reports whether an SSE frame carries an event (has a data
// line) and whether that event is terminal: the JSON object of its first
// data line has a top-level "type" of RUN_FINISHED or RUN_ERROR. A type the
// frame's bytes do not show (spelled with escapes, beyond the bytes looked
// at, an event split over several data lines) counts as not terminal: the
// proxy would rather add a RUN_ERROR the client can take after a finished
// run (the official client's verifier allows it) than let an unfinished run
// pass for finished.
func classifySSE(frame []byte) (event, terminal bool) {
	for len(frame) > 0 {
		if v, ok := dataValue(frame); ok {
			i, found := typeAt(v)
			return true, found && terminalAt(v, i)
		}
		i := indexLineEnd(frame)
		if i < 0 {
			return false, false
		}
		// "\r\n" leaves an empty line, skipped the next time round.
		frame = frame[i+1:]
	}
	return false, false
}

// dataValue returns, for a line that is a data field ("data:value", with
// one optional space after the colon, or a bare "data"), its value with the
// rest of the frame after it; the value ends at the first line end.
func dataValue(line []byte) ([]byte, bool) {
	if len(line) < 4 || line[0] != 'd' || line[1] != 'a' || line[2] != 't' || line[3] != 'a' {
		return nil, false
	}
	rest := line[4:]
	switch {
	case len(rest) == 0 || rest[0] == '\n' || rest[0] == '\r':
		return rest[:0], true
	case rest[0] != ':':
		return nil, false // another field ("database:")
	}
	rest = rest[1:]
	if len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}
	return rest, true
}

// terminalAt reports whether the JSON string whose contents start at v[i]
// is "RUN_FINISHED" or "RUN_ERROR".
func terminalAt(v []byte, i int) bool {
	rest := v[i:]
	if len(rest) < 10 || rest[0] != 'R' || rest[1] != 'U' || rest[2] != 'N' || rest[3] != '_' {
		return false // most events: decided in four bytes
	}
	return bytes.HasPrefix(rest, []byte(`RUN_FINISHED"`)) || bytes.HasPrefix(rest, []byte(`RUN_ERROR"`))
}

// typeAt finds the first top-level member named "type" of the JSON object
// at the start of v and, when its value is a string, returns the index of
// the string's contents (after its opening quote). It reads v only up to
// the member, and stops at the first line end: a data line ends there, and
// raw line ends cannot occur inside JSON strings. It validates no more
// JSON than it must to skip the members before "type"; it is no parser,
// and a key spelled with escapes is not "type" to it.
func typeAt(v []byte) (int, bool) {
	i := skipJSONSpace(v, 0)
	if i >= len(v) || v[i] != '{' {
		return 0, false
	}
	i++
	for {
		i = skipJSONSpace(v, i)
		if i >= len(v) || v[i] != '"' {
			return 0, false // '}' (no such member), or not JSON
		}
		isType := len(v) >= i+6 && v[i+1] == 't' && v[i+2] == 'y' && v[i+3] == 'p' && v[i+4] == 'e' && v[i+5] == '"'
		end := i + 6
		if !isType {
			if end = skipJSONString(v, i); end < 0 {
				return 0, false
			}
		}
		i = skipJSONSpace(v, end)
		if i >= len(v) || v[i] != ':' {
			return 0, false
		}
		i = skipJSONSpace(v, i+1)
		if isType {
			if i >= len(v) || v[i] != '"' {
				return 0, false
			}
			return i + 1, true
		}
		if i = skipJSONValue(v, i); i < 0 {
			return 0, false
		}
		i = skipJSONSpace(v, i)
		if i >= len(v) || v[i] != ',' {
			return 0, false
		}
		i++
	}
}

// skipJSONSpace skips spaces and tabs from i. Line ends are not skipped:
// they end a data line.
func skipJSONSpace(v []byte, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
		i++
	}
	return i
}

// skipJSONString returns the index after the string starting at v[i] (a
// quote), or -1 when it does not end before v or its line does.
func skipJSONString(v []byte, i int) int {
	for i++; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++ // the escaped byte; a \u's hex digits are plain bytes
		case '"':
			return i + 1
		case '\n', '\r':
			return -1
		}
	}
	return -1
}

// skipJSONValue returns the index after the value starting at v[i], or -1
// when it does not end before v or its line does. Objects and arrays are
// skipped by counting brackets outside strings, without checking that they
// pair up; scalars run to the next delimiter.
func skipJSONValue(v []byte, i int) int {
	if i >= len(v) {
		return -1
	}
	switch v[i] {
	case '"':
		return skipJSONString(v, i)
	case '{', '[':
		depth := 0
		for ; i < len(v); i++ {
			switch v[i] {
			case '"':
				end := skipJSONString(v, i)
				if end < 0 {
					return -1
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			case '\n', '\r':
				return -1
			}
		}
		return -1
	default:
		for ; i < len(v); i++ {
			switch v[i] {
			case ',', '}', ']', ' ', '\t':
				return i
			case '\n', '\r':
				return -1
			}
		}
		return -1
	}
}

// The first byte of an ag_ui Event message is the tag of its one populated
// oneof arm (field number << 3 | wire type 2). Arms numbered 16 and above
// take two tag bytes, the first with its high bit set, so one byte tells
// these two (events.proto, as @ag-ui/proto 1.0.0 encodes it).
const (
	protoArmRunFinished = protoEventRunFinished<<3 | byte(protowire.BytesType)
	protoArmRunError    = protoEventRunError<<3 | byte(protowire.BytesType)
)

// protoFrames follows AG-UI's binary encoding: it reads each frame's length
// prefix and the first byte of its message, and skips the rest.
type protoFrames struct {
	hdr      [4]byte
	hdrLen   int    // bytes of the length prefix seen; 4 while in a message
	size     uint32 // the message's length
	left     uint32 // bytes of the message still to come
	arm      byte   // the message's first byte
	terminal bool
}

func (f *protoFrames) add(b []byte) {
	for len(b) > 0 {
		if f.hdrLen < len(f.hdr) {
			n := copy(f.hdr[f.hdrLen:], b)
			f.hdrLen += n
			b = b[n:]
			if f.hdrLen < len(f.hdr) {
				return
			}
			f.size = binary.BigEndian.Uint32(f.hdr[:])
			f.left, f.arm = f.size, 0
			if f.left == 0 {
				f.frameEnded()
			}
			continue
		}
		if f.left == f.size {
			f.arm = b[0]
		}
		n := min(uint64(len(b)), uint64(f.left))
		f.left -= uint32(n)
		b = b[n:]
		if f.left == 0 {
			f.frameEnded()
		}
	}
}

func (f *protoFrames) frameEnded() {
	// An empty message is no valid event; it is not terminal either.
	f.terminal = f.size > 0 && (f.arm == protoArmRunFinished || f.arm == protoArmRunError)
	f.hdrLen = 0
}

func (f *protoFrames) atBoundary() bool { return f.hdrLen == 0 }
