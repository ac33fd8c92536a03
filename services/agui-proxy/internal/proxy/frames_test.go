package proxy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// referenceSSE computes, on the whole stream, what sseFrames tracks: cut
// at every boundary of referenceBoundary, each frame's first sseHeadMax
// bytes classified; whether the stream ends at a boundary, and whether its
// last event was terminal.
func referenceSSE(data []byte) (boundary, terminal bool) {
	start := 0
	for p := 1; p <= len(data); p++ {
		if !referenceBoundary(data[:p]) {
			continue
		}
		frame := data[start:p]
		if event, term := classifySSE(frame[:min(len(frame), sseHeadMax)]); event {
			terminal = term
		}
		start = p
	}
	return referenceBoundary(data), terminal
}

// referenceProto computes the same for AG-UI's binary encoding.
func referenceProto(data []byte) (boundary, terminal bool) {
	for {
		if len(data) == 0 {
			return true, terminal
		}
		if len(data) < 4 {
			return false, terminal
		}
		size := binary.BigEndian.Uint32(data)
		if uint64(len(data)-4) < uint64(size) {
			return false, terminal
		}
		msg := data[4 : 4+size]
		terminal = size > 0 && (msg[0] == protoArmRunFinished || msg[0] == protoArmRunError)
		data = data[4+size:]
	}
}

// track feeds data to an eventFrames in chunks, checking after each one
// that it agrees with the whole-stream reference on what it saw.
func track(t *testing.T, enc streamEncoding, data, sizes []byte) *eventFrames {
	t.Helper()
	ref := referenceSSE
	if enc == encodingProto {
		ref = referenceProto
	}
	f := &eventFrames{enc: enc}
	src := &chunkReader{data: bytes.Clone(data), sizes: sizes}
	buf := make([]byte, 64)
	seen := 0
	for {
		n, err := src.Read(buf)
		f.add(buf[:n])
		seen += n
		boundary, terminal := ref(data[:seen])
		if f.atBoundary() != boundary || f.terminal() != terminal {
			t.Fatalf("%v after %q: boundary %v terminal %v, want %v %v", enc, data[:seen], f.atBoundary(), f.terminal(), boundary, terminal)
		}
		if err != nil {
			return f
		}
	}
}

// FuzzEventFrames checks that the incremental frame tracking of both
// encodings, in any chunking, agrees with the whole-stream references.
func FuzzEventFrames(f *testing.F) {
	f.Add([]byte("data: {\"type\":\"RUN_FINISHED\"}\n\n"), []byte{4, 0, 9}, false)
	f.Add([]byte("id: 1\r\ndata: {\"type\":\"RUN_ERROR\"}\r\n\r\n: c\r\r"), []byte{0}, false)
	f.Add([]byte("data: {\"a\":{\"type\":\"RUN_FINISHED\"},\"type\":\"RAW\"}\n\ndata: {\"type\":\"RUN_ERROR\""), []byte{7}, false)
	f.Add(append(protoFrame(protoArmRunStarted, "x"), protoFrame(protoArmRunFinished, "yy")...), []byte{1, 2, 3}, true)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, protoArmRunError, 0, 0}, []byte{0}, true)
	f.Fuzz(func(t *testing.T, data, sizes []byte, proto bool) {
		enc := encodingSSE
		if proto {
			enc = encodingProto
		}
		track(t, enc, data, sizes)
	})
}

// protoArmRunStarted is Event.run_started's tag.
const protoArmRunStarted = 12<<3 | 2

// protoFrame is one frame of the binary encoding: an Event with the arm of
// tag arm holding body.
func protoFrame(arm byte, body string) []byte {
	msg := append([]byte{arm}, protowire.AppendString(nil, body)...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
}

func TestClassifySSE(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		frame           string
		event, terminal bool
	}{
		{name: "run finished", frame: "data: {\"type\":\"RUN_FINISHED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n", event: true, terminal: true},
		{name: "run error", frame: "data: {\"type\":\"RUN_ERROR\",\"message\":\"m\"}\n\n", event: true, terminal: true},
		{name: "content", frame: "data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"delta\":\"RUN_FINISHED\"}\n\n", event: true},
		{name: "run started", frame: "data: {\"type\":\"RUN_STARTED\"}\n\n", event: true},
		{name: "no space", frame: "data:{\"type\":\"RUN_FINISHED\"}\n\n", event: true, terminal: true},
		{name: "spaces and tabs", frame: "data: \t{ \"type\" :\t\"RUN_FINISHED\" }\n\n", event: true, terminal: true},
		{name: "crlf", frame: "data: {\"type\":\"RUN_FINISHED\"}\r\n\r\n", event: true, terminal: true},
		{name: "cr", frame: "data: {\"type\":\"RUN_FINISHED\"}\r\r", event: true, terminal: true},
		{name: "fields before data", frame: "id: 7\r\nevent: RUN_FINISHED\r\n: note\r\ndata: {\"type\":\"RUN_FINISHED\"}\r\n\r\n", event: true, terminal: true},
		{name: "type not first", frame: "data: {\"threadId\":\"t\",\"n\":-1.5e3,\"ok\":true,\"v\":null,\"a\":[1,{\"b\":\"}\"}],\"type\":\"RUN_FINISHED\"}\n\n", event: true, terminal: true},
		{name: "nested type only", frame: "data: {\"type\":\"RAW\",\"event\":{\"type\":\"RUN_FINISHED\"}}\n\n", event: true},
		{name: "nested type first", frame: "data: {\"rawEvent\":{\"type\":\"RUN_FINISHED\"},\"type\":\"CUSTOM\"}\n\n", event: true},
		{name: "in a string", frame: "data: {\"delta\":\"{\\\"type\\\":\\\"RUN_FINISHED\\\"}\",\"type\":\"TEXT_MESSAGE_CONTENT\"}\n\n", event: true},
		{name: "escaped key", frame: "data: {\"typ\\u0065\":\"RUN_FINISHED\"}\n\n", event: true},
		{name: "escaped value", frame: "data: {\"type\":\"RUN\\u005fFINISHED\"}\n\n", event: true},
		{name: "type not a string", frame: "data: {\"type\":1}\n\n", event: true},
		{name: "split over data lines", frame: "data: {\"type\":\ndata: \"RUN_FINISHED\"}\n\n", event: true},
		{name: "empty data", frame: "data\n\n", event: true},
		{name: "not json", frame: "data: RUN_FINISHED\n\n", event: true},
		{name: "comment", frame: ": ping\n\n"},
		{name: "comment naming the type", frame: ": {\"type\":\"RUN_FINISHED\"}\n\n"},
		{name: "other field", frame: "database: {\"type\":\"RUN_FINISHED\"}\n\n"},
		{name: "retry only", frame: "retry: 10\n\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			event, terminal := classifySSE([]byte(tc.frame))
			if event != tc.event || terminal != tc.terminal {
				t.Fatalf("classifySSE(%q) = %v, %v; want %v, %v", tc.frame, event, terminal, tc.event, tc.terminal)
			}
		})
	}
}

// TestSSEFramesSplitAnywhere: whatever the reads cut, and however small
// they are, a stream gets the answer its whole bytes give.
func TestSSEFramesSplitAnywhere(t *testing.T) {
	t.Parallel()
	started := "data: {\"type\":\"RUN_STARTED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n"
	content := "data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m\",\"delta\":\"日本語\"}\n\n"
	finished := "data: {\"type\":\"RUN_FINISHED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n"
	long := "data: {\"threadId\":\"" + strings.Repeat("t", 300) + "\",\"type\":\"RUN_FINISHED\"}\n\n"
	tests := []struct {
		name               string
		stream             string
		boundary, terminal bool
	}{
		{name: "empty", boundary: true},
		{name: "unfinished", stream: started + content, boundary: true},
		{name: "finished", stream: started + content + finished, boundary: true, terminal: true},
		{name: "finished then comments", stream: started + finished + ": ping\n\n: x\n\n", boundary: true, terminal: true},
		{name: "finished then a new run", stream: started + finished + started, boundary: true},
		{name: "finished then half a frame", stream: started + finished + content[:20], terminal: true},
		{name: "half a frame", stream: started + content[:len(content)-1]},
		{name: "crlf", stream: strings.ReplaceAll(started+finished, "\n", "\r\n"), boundary: true, terminal: true},
		{name: "lf then crlf", stream: strings.TrimSuffix(started+finished, "\n") + "\r\n", boundary: true, terminal: true},
		{name: "mixed line ends", stream: strings.Replace(started, "\n\n", "\r\n\n", 1) + strings.Replace(finished, "\n\n", "\n\r", 1), boundary: true, terminal: true},
		{name: "type late in a long frame", stream: started + long, boundary: true, terminal: true},
		{name: "type beyond the bytes looked at", stream: started + "data: {\"threadId\":\"" + strings.Repeat("t", sseHeadMax) + "\",\"type\":\"RUN_FINISHED\"}\n\n", boundary: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := []byte(tc.stream)
			check := func(f *eventFrames, how string) {
				t.Helper()
				if f.atBoundary() != tc.boundary || f.terminal() != tc.terminal {
					t.Fatalf("%s: boundary %v terminal %v, want %v %v", how, f.atBoundary(), f.terminal(), tc.boundary, tc.terminal)
				}
			}
			for cut := 0; cut <= len(data); cut++ {
				f := &eventFrames{enc: encodingSSE}
				f.add(data[:cut])
				f.add(data[cut:])
				check(f, fmt.Sprintf("cut at %d", cut))
			}
			check(track(t, encodingSSE, data, []byte{0}), "byte by byte")
			check(track(t, encodingSSE, data, []byte{2, 6, 0, 40}), "odd reads")
		})
	}
}

func TestProtoFrames(t *testing.T) {
	t.Parallel()
	started := protoFrame(protoArmRunStarted, "r")
	content := protoFrame(1<<3|2, strings.Repeat("x", 300)) // TEXT_MESSAGE_CONTENT, a 2-byte length inside
	finished := protoFrame(protoArmRunFinished, "r")
	failed := protoFrame(protoArmRunError, "boom")
	subagent := protoFrame(0x9a, "\x01") // arm 19's tag takes two bytes, 0x9a 0x01: the first is no arm
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name               string
		stream             []byte
		boundary, terminal bool
	}{
		{name: "empty", boundary: true},
		{name: "unfinished", stream: join(started, content), boundary: true},
		{name: "finished", stream: join(started, content, finished), boundary: true, terminal: true},
		{name: "run error", stream: join(started, failed), boundary: true, terminal: true},
		{name: "finished then a new run", stream: join(started, finished, started), boundary: true},
		{name: "two-byte tag", stream: join(started, subagent), boundary: true},
		{name: "empty message", stream: join(finished, []byte{0, 0, 0, 0}), boundary: true},
		{name: "inside a length prefix", stream: join(started, finished[:2]), terminal: false},
		{name: "inside a message", stream: join(started, finished, content[:100]), terminal: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for cut := 0; cut <= len(tc.stream); cut++ {
				f := &eventFrames{enc: encodingProto}
				f.add(tc.stream[:cut])
				f.add(tc.stream[cut:])
				if f.atBoundary() != tc.boundary || f.terminal() != tc.terminal {
					t.Fatalf("cut at %d: boundary %v terminal %v, want %v %v", cut, f.atBoundary(), f.terminal(), tc.boundary, tc.terminal)
				}
			}
			track(t, encodingProto, tc.stream, []byte{0})
		})
	}
}

// TestOtherEncodingNeverAtBoundary: the proxy cannot add an event to a body
// whose framing it does not know.
func TestOtherEncodingNeverAtBoundary(t *testing.T) {
	t.Parallel()
	f := &eventFrames{enc: encodingOther}
	f.add([]byte("data: {\"type\":\"RUN_FINISHED\"}\n\n"))
	if f.atBoundary() || f.terminal() {
		t.Fatalf("boundary %v terminal %v, want false false", f.atBoundary(), f.terminal())
	}
	for ct, want := range map[string]streamEncoding{
		"text/event-stream": encodingSSE, "Text/Event-Stream; charset=utf-8": encodingSSE,
		"application/vnd.ag-ui.event+proto": encodingProto, " APPLICATION/VND.AG-UI.EVENT+PROTO ;x=y": encodingProto,
		"application/json": encodingOther, "": encodingOther, "text/event-streams": encodingOther,
	} {
		if got := encodingOf(ct); got != want {
			t.Errorf("encodingOf(%q) = %v, want %v", ct, got, want)
		}
	}
}

// TestRunErrorFrames: the frames the proxy adds are what AG-UI's schema
// says (@ag-ui/core RunErrorEvent; events.proto's Event.run_error), and
// each is a complete terminal event to the proxy's own tracking.
func TestRunErrorFrames(t *testing.T) {
	t.Parallel()
	wantSSE := map[runEnd]string{
		endRunnerGone: "data: {\"type\":\"RUN_ERROR\",\"message\":\"the session's runner stopped or moved; the run did not finish\",\"code\":\"RUNNER_GONE\"}\n\n",
		endShutdown:   "data: {\"type\":\"RUN_ERROR\",\"message\":\"agui-proxy is shutting down; retry the request\",\"code\":\"PROXY_SHUTDOWN\"}\n\n",
	}
	for why, want := range wantSSE {
		if got := string(runErrorFrames[why][encodingSSE]); got != want {
			t.Errorf("SSE RUN_ERROR %d:\n got %q\nwant %q", why, got, want)
		}
	}
	for why, e := range runErrors {
		frame := runErrorFrames[why][encodingProto]
		if size := binary.BigEndian.Uint32(frame); int(size) != len(frame)-4 {
			t.Fatalf("length prefix %d for a %d-byte message", size, len(frame)-4)
		}
		fields := protoFields(t, frame[4:])
		ev, ok := fields[protoEventRunError]
		if len(fields) != 1 || !ok {
			t.Fatalf("Event fields %v, want run_error (14) only", fields)
		}
		inner := protoFields(t, ev)
		base := protoFields(t, inner[protoRunErrorBaseEvent])
		typ, n := protowire.ConsumeVarint(base[protoBaseEventType])
		if n < 0 || typ != protoEventTypeRunError || string(inner[protoRunErrorCode]) != e.Code || string(inner[protoRunErrorMessage]) != e.Message {
			t.Fatalf("RunErrorEvent: base type %d, code %q, message %q; want %d, %q, %q",
				typ, inner[protoRunErrorCode], inner[protoRunErrorMessage], protoEventTypeRunError, e.Code, e.Message)
		}
	}
	for _, enc := range []streamEncoding{encodingSSE, encodingProto} {
		for why := range runErrors {
			f := &eventFrames{enc: enc}
			f.add(runErrorFrames[why][enc])
			if !f.atBoundary() || !f.terminal() {
				t.Errorf("%v RUN_ERROR %d: boundary %v terminal %v after it, want true true", enc, why, f.atBoundary(), f.terminal())
			}
		}
	}
}

// protoFields parses a message of length-delimited and varint fields into
// field number -> value (a varint's value as its encoded bytes).
func protoFields(t *testing.T, b []byte) map[protowire.Number][]byte {
	t.Helper()
	out := map[protowire.Number][]byte{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			_, n = protowire.ConsumeVarint(b)
			if n >= 0 {
				v = b[:n]
			}
		default:
			t.Fatalf("field %d: unexpected wire type %d", num, typ)
		}
		if n < 0 {
			t.Fatalf("field %d: %v", num, protowire.ParseError(n))
		}
		if _, dup := out[num]; dup {
			t.Fatalf("field %d twice", num)
		}
		out[num] = v
		b = b[n:]
	}
	return out
}

// referenceType walks the top level of a valid JSON object with
// encoding/json and returns the first member whose key is "type": its
// value and whether that is a string.
func referenceType(t *testing.T, v []byte) (val string, isString, found bool) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(v))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("valid JSON %q: %v", v, err)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			t.Fatalf("valid JSON %q: %v", v, err)
		}
		if tok == "type" {
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return "", false, true
			}
			return s, true, true
		}
	}
	return "", false, false
}

// FuzzSniffType checks the type sniffer against encoding/json on valid
// JSON objects: what it finds is the first top-level "type" member's
// string value, and it finds it whenever that exists on one line (no raw
// line ends) and no key can be spelled with a \u escape. Any input: no
// panic.
func FuzzSniffType(f *testing.F) {
	for _, s := range []string{
		`{"type":"RUN_FINISHED"}`, `{"a":{"type":"RUN_ERROR"},"type":"RAW"}`, `{ "x" : [1, "]", {"y": "\""}], "type" : "RUN_ERROR" }`,
		`{"type":1,"type":"RUN_FINISHED"}`, `{"typ\u0065":"RUN_FINISHED"}`, `{"type":"RUN\u005fERROR"}`, `{"a":-0.5e+7,"b":true,"type":"T"}`,
		`{"a":"\\","type":"RUN_FINISHED"}`, `{"a":` + "\n" + `1,"type":"X"}`, `[{"type":"RUN_FINISHED"}]`, `{"type":"RUN_FINISHED"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		got, ok := sniffType(v)
		if !json.Valid(v) {
			return
		}
		want, isString, found := referenceType(t, v)
		if ok {
			var unescaped string
			if err := json.Unmarshal([]byte(`"`+string(got)+`"`), &unescaped); err != nil {
				t.Fatalf("sniffType(%q) = %q, not a JSON string's contents: %v", v, got, err)
			}
			if !bytes.Contains(v, []byte(`\u`)) && (!found || !isString || unescaped != want) {
				t.Fatalf("sniffType(%q) = %q; encoding/json: %q (string %v, found %v)", v, got, want, isString, found)
			}
			return
		}
		if found && isString && !bytes.ContainsAny(v, "\r\n") && !bytes.Contains(v, []byte(`\u`)) {
			t.Fatalf("sniffType(%q) found nothing; encoding/json: type %q", v, want)
		}
	})
}

// sniffType returns the raw value (between its quotes, escapes left as
// they are) of the first top-level member named "type" of the JSON object
// at the start of v, if that value is a string: typeAt's answer read out
// with skipJSONString, for comparison with encoding/json.
func sniffType(v []byte) ([]byte, bool) {
	i, ok := typeAt(v)
	if !ok {
		return nil, false
	}
	end := skipJSONString(v, i-1)
	if end < 0 {
		return nil, false
	}
	return v[i : end-1], true
}
