package ambientv1_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Registers every file of package ambient.v1 in protoregistry.GlobalFiles.
	_ "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// factsPath is the repository's copy of the measured wire facts (see
// testdata/README.md); sharedFactsPath the original beside the repository.
const (
	factsPath       = "testdata/ambient-v1-wire.json"
	sharedFactsPath = "../../../../shared/design/ambient-v1-wire.json"
	pkg             = "ambient.v1"
)

// wireFacts is the shape of ambient-v1-wire.json.
type wireFacts struct {
	Enums    map[string]map[string]int32     `json:"enums"`
	Messages map[string]map[string]wireField `json:"messages"`
	Services map[string]map[string]wireRPC   `json:"services"`
}

type wireField struct {
	Label string `json:"label"` // "", "optional" or "repeated"
	N     int32  `json:"n"`
	Type  string `json:"type"` // scalar kind, or a message/enum name (ambient.v1 names unqualified)
}

type wireRPC struct {
	Req    string `json:"req"`
	Resp   string `json:"resp"`
	Stream bool   `json:"stream"` // server streaming
}

func loadFacts(t *testing.T, path string) wireFacts {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read wire facts: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields() // a changed facts format must not be read as "no facts"
	var f wireFacts
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	if len(f.Messages) == 0 || len(f.Services) == 0 {
		t.Fatalf("%s holds no messages or services", path)
	}
	return f
}

// ours describes package ambient.v1 as compiled into the generated Go code,
// in the facts file's terms.
func ours(t *testing.T) wireFacts {
	t.Helper()
	w := wireFacts{
		Enums:    map[string]map[string]int32{},
		Messages: map[string]map[string]wireField{},
		Services: map[string]map[string]wireRPC{},
	}
	n := 0
	protoregistry.GlobalFiles.RangeFilesByPackage(pkg, func(fd protoreflect.FileDescriptor) bool {
		n++
		describeFile(w, fd)
		return true
	})
	if n == 0 {
		t.Fatalf("no files of package %s registered", pkg)
	}
	return w
}

func describeFile(w wireFacts, fd protoreflect.FileDescriptor) {
	for i := range fd.Enums().Len() {
		describeEnum(w, fd.Enums().Get(i))
	}
	for i := range fd.Messages().Len() {
		describeMessage(w, fd.Messages().Get(i))
	}
	for i := range fd.Services().Len() {
		sd := fd.Services().Get(i)
		rpcs := map[string]wireRPC{}
		for j := range sd.Methods().Len() {
			md := sd.Methods().Get(j)
			stream := md.IsStreamingServer()
			if md.IsStreamingClient() {
				// The facts know no client streams; make the difference visible.
				stream = !stream
			}
			rpcs[string(md.Name())] = wireRPC{Req: typeName(md.Input().FullName()), Resp: typeName(md.Output().FullName()), Stream: stream}
		}
		w.Services[string(sd.Name())] = rpcs
	}
}

func describeEnum(w wireFacts, ed protoreflect.EnumDescriptor) {
	vals := map[string]int32{}
	for i := range ed.Values().Len() {
		v := ed.Values().Get(i)
		vals[string(v.Name())] = int32(v.Number())
	}
	w.Enums[string(ed.Name())] = vals
}

// describeMessage records md; nested messages and enums get their dotted
// names (the real package has none, so any nested type shows as extra).
func describeMessage(w wireFacts, md protoreflect.MessageDescriptor) {
	fields := map[string]wireField{}
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		f := wireField{N: int32(fd.Number())}
		switch {
		case fd.Cardinality() == protoreflect.Repeated:
			f.Label = "repeated"
		case fd.HasOptionalKeyword():
			f.Label = "optional"
		}
		switch fd.Kind() {
		case protoreflect.MessageKind, protoreflect.GroupKind:
			f.Type = typeName(fd.Message().FullName())
		case protoreflect.EnumKind:
			f.Type = typeName(fd.Enum().FullName())
		default:
			f.Type = fd.Kind().String()
		}
		fields[string(fd.Name())] = f
	}
	w.Messages[typeName(md.FullName())] = fields
	for i := range md.Messages().Len() {
		describeMessage(w, md.Messages().Get(i))
	}
	for i := range md.Enums().Len() {
		ed := md.Enums().Get(i)
		describeEnum(w, ed)
		w.Enums[typeName(ed.FullName())] = w.Enums[string(ed.Name())]
		delete(w.Enums, string(ed.Name()))
	}
}

// typeName writes ambient.v1 types unqualified, others (google.protobuf.*)
// in full, like the facts file.
func typeName(n protoreflect.FullName) string {
	return strings.TrimPrefix(string(n), pkg+".")
}

// diffWire lists every difference between the real server's wire contract
// (want) and ours (got): missing or extra messages, fields, enum values,
// services and RPCs; a field whose number, type or label differs; and a
// field of ours whose number the real server uses for another field (read
// by the server as that field).
func diffWire(want, got wireFacts) []string {
	var d []string
	for _, name := range sortedKeys(want.Messages) {
		wm := want.Messages[name]
		gm, ok := got.Messages[name]
		if !ok {
			d = append(d, fmt.Sprintf("message %s: missing", name))
			continue
		}
		byNumber := map[int32]string{}
		for fname, f := range wm {
			byNumber[f.N] = fname
		}
		for _, fname := range sortedKeys(wm) {
			wf := wm[fname]
			gf, ok := gm[fname]
			if !ok {
				d = append(d, fmt.Sprintf("%s.%s: missing (real: %d %s %s)", name, fname, wf.N, label(wf.Label), wf.Type))
				continue
			}
			if gf != wf {
				d = append(d, fmt.Sprintf("%s.%s: got %d %s %s, real server has %d %s %s", name, fname, gf.N, label(gf.Label), gf.Type, wf.N, label(wf.Label), wf.Type))
			}
		}
		for _, fname := range sortedKeys(gm) {
			gf := gm[fname]
			if other, taken := byNumber[gf.N]; taken && other != fname {
				d = append(d, fmt.Sprintf("%s.%s: number %d is %s on the real server", name, fname, gf.N, other))
			}
			if _, ok := wm[fname]; !ok {
				d = append(d, fmt.Sprintf("%s.%s: not in the real server's message (number %d)", name, fname, gf.N))
			}
		}
	}
	for _, name := range sortedKeys(got.Messages) {
		if _, ok := want.Messages[name]; !ok {
			d = append(d, fmt.Sprintf("message %s: not in the real ambient.v1", name))
		}
	}
	d = append(d, diffMaps("enum", want.Enums, got.Enums, func(e string, w, g int32) string {
		return fmt.Sprintf("enum value %s: got %d, real server has %d", e, g, w)
	})...)
	d = append(d, diffMaps("service", want.Services, got.Services, func(r string, w, g wireRPC) string {
		return fmt.Sprintf("rpc %s: got %+v, real server has %+v", r, g, w)
	})...)
	return d
}

// diffMaps compares two-level maps (enums and services) by key and value.
func diffMaps[V comparable](what string, want, got map[string]map[string]V, differ func(name string, w, g V) string) []string {
	var d []string
	for _, name := range sortedKeys(want) {
		g, ok := got[name]
		if !ok {
			d = append(d, fmt.Sprintf("%s %s: missing", what, name))
			continue
		}
		w := want[name]
		for _, k := range sortedKeys(w) {
			gv, ok := g[k]
			switch {
			case !ok:
				d = append(d, fmt.Sprintf("%s %s: %s missing", what, name, k))
			case gv != w[k]:
				d = append(d, differ(name+"."+k, w[k], gv))
			}
		}
		for _, k := range sortedKeys(g) {
			if _, ok := w[k]; !ok {
				d = append(d, fmt.Sprintf("%s %s: %s not in the real server's", what, name, k))
			}
		}
	}
	for _, name := range sortedKeys(got) {
		if _, ok := want[name]; !ok {
			d = append(d, fmt.Sprintf("%s %s: not in the real ambient.v1", what, name))
		}
	}
	return d
}

func label(l string) string {
	if l == "" {
		return "(singular)"
	}
	return l
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestWireMatchesRealServer is the wire contract: package ambient.v1 as
// compiled must equal the real server's, field by field.
func TestWireMatchesRealServer(t *testing.T) {
	want := loadFacts(t, factsPath)
	got := ours(t)
	if d := diffWire(want, got); len(d) > 0 {
		t.Fatalf("proto/ambient/v1 differs from the real ambient.v1 (%s) in %d places:\n  %s", factsPath, len(d), strings.Join(d, "\n  "))
	}
	t.Logf("%d messages, %d enums, %d services match %s", len(want.Messages), len(want.Enums), len(want.Services), factsPath)
}

// TestDiffWireCatchesEveryKindOfDifference proves the comparison can fail:
// each mutation of the facts (one number, one type, one label, a field
// missing or extra, a renumbering onto another field, a missing message,
// enum value or RPC) must be reported.
func TestDiffWireCatchesEveryKindOfDifference(t *testing.T) {
	got := ours(t)
	tests := []struct {
		name   string
		mutate func(w wireFacts)
		want   string
	}{
		{"field number", func(w wireFacts) { setField(w, "CreateSessionRequest", "name", func(f *wireField) { f.N = 2 }) }, "CreateSessionRequest.name: got 1"},
		{"number used by another field", func(w wireFacts) {
			// The real server swapped two numbers: ours are read as each other.
			setField(w, "UpdateSessionRequest", "prompt", func(f *wireField) { f.N = 3 })
			setField(w, "UpdateSessionRequest", "repo_url", func(f *wireField) { f.N = 4 })
		}, "UpdateSessionRequest.repo_url: number 3 is prompt on the real server"},
		{"type", func(w wireFacts) { setField(w, "Session", "timeout", func(f *wireField) { f.Type = "int64" }) }, "Session.timeout: got 10 optional int32"},
		{"label", func(w wireFacts) { setField(w, "Session", "name", func(f *wireField) { f.Label = "optional" }) }, "Session.name: got 2 (singular) string"},
		{"repeated", func(w wireFacts) { setField(w, "ListSessionsResponse", "items", func(f *wireField) { f.Label = "" }) }, "ListSessionsResponse.items: got 1 repeated Session"},
		{"field we lack", func(w wireFacts) { w.Messages["Project"]["owner"] = wireField{N: 8, Type: "string"} }, "Project.owner: missing"},
		{"field the server lacks", func(w wireFacts) { delete(w.Messages["UpdateSessionRequest"], "assigned_user_id") }, "UpdateSessionRequest.assigned_user_id: not in the real server's message"},
		{"message we lack", func(w wireFacts) { w.Messages["Widget"] = map[string]wireField{} }, "message Widget: missing"},
		{"message the server lacks", func(w wireFacts) { delete(w.Messages, "Error") }, "message Error: not in the real ambient.v1"},
		{"enum value", func(w wireFacts) { w.Enums["EventType"]["EVENT_TYPE_DELETED"] = 4 }, "enum value EventType.EVENT_TYPE_DELETED"},
		{"rpc", func(w wireFacts) { w.Services["SessionService"]["StartSession"] = wireRPC{Req: "X", Resp: "Session"} }, "service SessionService: StartSession missing"},
		{"stream flag", func(w wireFacts) {
			r := w.Services["SessionService"]["WatchSessions"]
			r.Stream = false
			w.Services["SessionService"]["WatchSessions"] = r
		}, "rpc SessionService.WatchSessions"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := loadFacts(t, factsPath)
			tc.mutate(want)
			d := diffWire(want, got)
			if !slices.ContainsFunc(d, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Fatalf("diff %q does not report %q", d, tc.want)
			}
		})
	}
}

func setField(w wireFacts, msg, field string, fn func(*wireField)) {
	f := w.Messages[msg][field]
	fn(&f)
	w.Messages[msg][field] = f
}

// TestFactsCopyIsCurrent keeps testdata's copy equal to the shared original
// when the shared design folder is there (it is not in CI).
func TestFactsCopyIsCurrent(t *testing.T) {
	shared, err := os.ReadFile(sharedFactsPath)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s not present (clean clone): only the copy in %s is checked", sharedFactsPath, factsPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	local, err := os.ReadFile(factsPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shared, local) {
		t.Fatalf("%s differs from %s: copy the measured facts over, then fix the protos", factsPath, sharedFactsPath)
	}
}
