package registry_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
)

// TestRoutable: only a record with a host and a port of a runner that has
// not exited can be dialled; an exited runner's record keeps its old
// address, which must not be routed to.
func TestRoutable(t *testing.T) {
	t.Parallel()
	live := ep("s", "m")
	live.Host, live.Port, live.State = "10.0.0.1", 9100, registry.StateRunning
	tests := []struct {
		name string
		mod  func(*registry.Endpoint)
		want bool
	}{
		{"running", func(*registry.Endpoint) {}, true},
		{"starting", func(e *registry.Endpoint) { e.State = registry.StateStarting }, true},
		{"no host", func(e *registry.Endpoint) { e.Host = "" }, false},
		{"no port", func(e *registry.Endpoint) { e.Port = 0 }, false},
		{"exited with its old address", func(e *registry.Endpoint) {
			e.State = registry.StateExited
			e.Final = &registry.Final{Phase: "Completed", Reason: "RunnerExited", At: time.Unix(1700000100, 0).UTC()}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := live
			tc.mod(&e)
			if got := e.Routable(); got != tc.want {
				t.Fatalf("Routable(%+v) = %v, want %v", e, got, tc.want)
			}
		})
	}
}

// TestPortRange: 0 (no port yet) and 65535 are valid ports; 65536 and -1
// are not (TestInvalid).
func TestPortRange(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ctx := t.Context()
	for _, port := range []int{0, 1, 65535} {
		e := ep("s", "m")
		e.Host, e.Port = "10.0.0.1", port
		if _, err := registry.Claim(ctx, kv, e); err != nil {
			t.Fatalf("claim with port %d: %v", port, err)
		}
		if got, err := registry.Get(ctx, kv, "s"); err != nil || got.Port != port {
			t.Fatalf("get with port %d = %+v, %v", port, got, err)
		}
		if _, err := registry.Release(ctx, kv, "s", "m"); err != nil {
			t.Fatalf("release with port %d: %v", port, err)
		}
	}
}

// TestDecodeValidates: bytes that parse as JSON but are no record (no
// session id, no owner) are invalid, read directly or from the bucket.
func TestDecodeValidates(t *testing.T) {
	t.Parallel()
	for _, b := range []string{`{}`, `{"session_id":"s"}`, `{"owner":"m"}`, `{"session_id":"s","owner":"m","port":65536}`} {
		if _, err := registry.Decode([]byte(b)); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("Decode(%s) = %v, want ErrInvalid", b, err)
		}
	}
	kv := newKV(t)
	ctx := t.Context()
	if _, err := kv.Put(ctx, registry.Key("empty"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got, err := registry.Get(ctx, kv, "empty"); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("get of a stored {} = %+v, %v, want ErrInvalid", got, err)
	}
}

// TestRecordJSON: the stored record is read by other services
// (agui-proxy, runner-manager replicas of another version), so its field
// names and omissions are a contract: these are the exact bytes in the
// bucket, and they decode back to the same record.
func TestRecordJSON(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ctx := t.Context()
	full := registry.Endpoint{
		SessionID: "full", ProjectID: "p", Owner: "m", Host: "10.0.0.1", Port: 9100, PID: 42,
		StartedAt: time.Unix(1700000000, 0).UTC(), State: registry.StateExited,
		Final: &registry.Final{Phase: "Failed", Reason: "RunnerExited", Message: "exit status 1", At: time.Unix(1700000100, 0).UTC()},
	}
	minimal := registry.Endpoint{SessionID: "min", Owner: "m", StartedAt: time.Unix(1700000000, 0).UTC(), State: registry.StateClaimed}
	ended := registry.Endpoint{
		SessionID: "ended", Owner: "m", StartedAt: time.Unix(1700000000, 0).UTC(), State: registry.StateExited,
		Final: &registry.Final{Phase: "Stopped", Reason: "StopRequested", At: time.Unix(1700000100, 0).UTC()},
	}
	tests := []struct {
		ep   registry.Endpoint
		want string
	}{
		{full, `{"session_id":"full","project_id":"p","owner":"m","host":"10.0.0.1","port":9100,"pid":42,` +
			`"started_at":"2023-11-14T22:13:20Z","state":"exited",` +
			`"final":{"phase":"Failed","reason":"RunnerExited","message":"exit status 1","at":"2023-11-14T22:15:00Z"}}`},
		{minimal, `{"session_id":"min","owner":"m","started_at":"2023-11-14T22:13:20Z","state":"claimed"}`},
		{ended, `{"session_id":"ended","owner":"m","started_at":"2023-11-14T22:13:20Z","state":"exited",` +
			`"final":{"phase":"Stopped","reason":"StopRequested","at":"2023-11-14T22:15:00Z"}}`},
	}
	for _, tc := range tests {
		if _, err := registry.Claim(ctx, kv, tc.ep); err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, registry.Key(tc.ep.SessionID))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(e.Value()); got != tc.want {
			t.Errorf("stored record of %s:\n got %s\nwant %s", tc.ep.SessionID, got, tc.want)
		}
		back, err := registry.Decode([]byte(tc.want))
		if err != nil {
			t.Fatalf("decode %s: %v", tc.want, err)
		}
		if !reflect.DeepEqual(back, tc.ep) {
			t.Errorf("decoded %s = %+v, want %+v", tc.want, back, tc.ep)
		}
	}
}
