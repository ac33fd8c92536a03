package apiclient_test

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/libs/testenv/secretmount"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// syncBuffer is a bytes.Buffer safe for the client's goroutines to log into.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRotatedTokenFileReachesNextCall: a service given its token as a file
// (AMBIENT_API_TOKEN_FILE, a mounted Secret) sends the new token on the
// first call after the kubelet swapped the file, without a restart; a
// rotation that leaves the file empty keeps the last good token and warns
// once. The API accepts only token-two, so each call's answer says which
// token it carried. Before, the token was read once at start: every call
// kept sending token-one.
func TestRotatedTokenFileReachesNextCall(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t, memapi.WithToken("token-two"))
	dir := t.TempDir()
	path := secretmount.Write(t, dir, map[string]string{"token": "token-one\n"})["token"]
	l := envconfig.New(envconfig.Map(map[string]string{
		apiclient.EnvAPIToken + envconfig.FileSuffix: path,
		apiclient.EnvGRPCAddr:                        srv.GRPCAddr(),
	}))
	cfg := apiclient.LoadEnv(l).Config()
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	c, err := apiclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	steps := []struct {
		name    string
		rotate  string // the file's new content; "" leaves it
		want    codes.Code
		wantLog string // a line the step logs
	}{
		{name: "token-one from the start, refused", want: codes.Unauthenticated},
		{name: "rotated to token-two", rotate: "token-two\n", want: codes.OK, wantLog: "level=INFO msg=\"secret file read again\""},
		{name: "rotated to an empty file: token-two kept", rotate: "\n", want: codes.OK, wantLog: "level=WARN msg=\"secret file unusable, keeping the last secret read\""},
		{name: "rotated back to token-one", rotate: "token-one\n", want: codes.Unauthenticated},
	}
	for _, st := range steps {
		if st.rotate != "" {
			secretmount.Write(t, dir, map[string]string{"token": st.rotate})
		}
		for range 3 {
			_, err := c.Projects().ListProjects(t.Context(), &ambientv1.ListProjectsRequest{Page: 1, Size: 1})
			if got := status.Code(err); got != st.want {
				t.Fatalf("%s: ListProjects = %v (%v), want %v", st.name, got, err, st.want)
			}
		}
		if st.wantLog != "" && !strings.Contains(logs.String(), st.wantLog) {
			t.Errorf("%s: logs lack %s:\n%s", st.name, st.wantLog, logs.String())
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings for 3 calls on an empty token file, want 1:\n%s", n, logs.String())
	}
	if s := logs.String(); strings.Contains(s, "token-one") || strings.Contains(s, "token-two") {
		t.Errorf("logs show a token:\n%s", logs.String())
	}
}

// TestTokenAndTokenFile: New takes the token or its file, not both, and
// refuses a file with no usable token rather than sending an empty one.
func TestTokenAndTokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := secretmount.Write(t, dir, map[string]string{"token": "tok\n"})["token"]
	tests := []struct {
		name string
		cfg  apiclient.Config
		want error // nil: New succeeds
	}{
		{"token", apiclient.Config{Addr: "localhost:1", Token: "tok"}, nil},
		{"token file", apiclient.Config{Addr: "localhost:1", TokenFile: good}, nil},
		{"both", apiclient.Config{Addr: "localhost:1", Token: "tok", TokenFile: good}, apiclient.ErrInvalidConfig},
		{"missing file", apiclient.Config{Addr: "localhost:1", TokenFile: filepath.Join(dir, "none")}, fs.ErrNotExist},
		{"empty file", apiclient.Config{Addr: "localhost:1", TokenFile: empty}, envconfig.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := apiclient.New(tc.cfg)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Close(); err != nil {
					t.Error(err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, apiclient.ErrInvalidConfig) {
				t.Errorf("New = %v, want an error wrapping %v and ErrInvalidConfig", err, tc.want)
			}
		})
	}
}
