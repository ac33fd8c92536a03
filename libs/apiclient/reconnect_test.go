package apiclient_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReconnectBackoffIsCapped: while the server refuses connections the
// client tries again no more than ReconnectMaxDelay apart (grpc-go's own
// cap is 120 s: after an API restart of a minute or two, every client
// stayed cut off for up to two minutes after the server was back). With a
// 200 ms cap, 8 attempts take under 2 s; grpc-go's default backoff (1 s,
// ×1.6) needs about 43 s for them.
func TestReconnectBackoffIsCapped(t *testing.T) {
	var mu sync.Mutex
	var attempts []time.Time
	refused := errors.New("connection refused (test dialer)")
	dial := func(context.Context, string) (net.Conn, error) {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, time.Now())
		return nil, refused
	}
	c, err := apiclient.New(apiclient.Config{Addr: "127.0.0.1:1", ReconnectMaxDelay: 200 * time.Millisecond,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() }) //nolint:errcheck // test cleanup
	_ = c.Check(t.Context())            //nolint:errcheck // refused: it only starts the connection attempts
	const want = 8
	testenv.Eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if n := len(attempts); n < want {
			return fmt.Errorf("%d connection attempts, want %d: the backoff is not capped at 200ms", n, want)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for i := 2; i < want; i++ {
		// 200 ms + 20 % jitter, and scheduling slack on a loaded machine.
		if gap := attempts[i].Sub(attempts[i-1]); gap > 900*time.Millisecond {
			t.Errorf("attempt %d came %s after the one before, want about 200ms (the cap)", i+1, gap)
		}
	}
}

// TestDefaultReconnectCap pins the default a Config gets.
func TestDefaultReconnectCap(t *testing.T) {
	if apiclient.DefaultReconnectMaxDelay > 10*time.Second {
		t.Fatalf("DefaultReconnectMaxDelay %s: a restarted API would wait that long for its clients", apiclient.DefaultReconnectMaxDelay)
	}
	if _, err := apiclient.New(apiclient.Config{Addr: "127.0.0.1:1", ReconnectMaxDelay: -time.Second}); !errors.Is(err, apiclient.ErrInvalidConfig) {
		t.Fatalf("negative ReconnectMaxDelay: err %v, want ErrInvalidConfig", err)
	}
}
