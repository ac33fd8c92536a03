package memapi_test

import (
	"fmt"
	"testing"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// BenchmarkCreateSession measures in-process creates (seeding cost).
func BenchmarkCreateSession(b *testing.B) {
	srv := start(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := srv.Sessions().CreateSession(b.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprint(i)}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkListSessions100k lists 100,000 sessions over gRPC with the
// client's ListAll (pages of 500), as the informer's initial sync does.
func BenchmarkListSessions100k(b *testing.B) {
	srv := start(b)
	seedSessions(b, srv, 100_000)
	c := client(b, srv, testToken)
	b.ReportAllocs()
	for b.Loop() {
		got, err := c.ListSessions(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != 100_000 {
			b.Fatalf("got %d", len(got))
		}
	}
}
