package envconfig

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

	"github.com/ambient-code/control-plane/libs/testenv/secretmount"
)

// logLines is a logger writing text lines into a buffer, and a count of
// the lines of one level in it.
func logLines() (*slog.Logger, func(level string) int) {
	var (
		mu  sync.Mutex
		buf bytes.Buffer
	)
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	})
	count := func(level string) int {
		mu.Lock()
		defer mu.Unlock()
		return strings.Count(buf.String(), "level="+level+" ")
	}
	return slog.New(slog.NewTextHandler(w, nil)), count
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestSecretFileFollowsKubeletSwap: a Secret rotated by the kubelet's
// symlink swap is read at the next call, even when the new secret has the
// old one's length and the swap happens within the file system's
// timestamp granularity (the file behind the path is another one).
func TestSecretFileFollowsKubeletSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := secretmount.Write(t, dir, map[string]string{"token": "token-one\n"})["token"]
	log, count := logLines()
	s, err := NewSecretFile(path, log)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name, content, want string
	}{
		{"same length", "token-two\n", "token-two"},
		{"same content again", "token-two\n", "token-two"},
		{"longer, no newline", "token-three-longer", "token-three-longer"},
	}
	if got := s.Value().Reveal(); got != "token-one" {
		t.Fatalf("Value() = %q before any rotation, want token-one", got)
	}
	for _, st := range steps {
		secretmount.Write(t, dir, map[string]string{"token": st.content})
		if got := s.Value().Reveal(); got != st.want {
			t.Fatalf("%s: Value() = %q after the swap, want %q", st.name, got, st.want)
		}
	}
	if n := count("WARN"); n != 0 {
		t.Errorf("%d warnings for good rotations, want 0", n)
	}
	if n := count("INFO"); n != 2 {
		t.Errorf("%d info lines, want 2 (one per changed secret, none for the same secret again)", n)
	}
}

// TestSecretFileKeepsLastGoodSecret: a rotation that leaves the file
// unusable keeps the last good secret, warns once however many calls
// follow, and the next good rotation is taken (and logged) again.
func TestSecretFileKeepsLastGoodSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		spoil func(t *testing.T, dir, path string)
	}{
		{"empty", func(t *testing.T, dir, _ string) { secretmount.Write(t, dir, map[string]string{"token": "\n"}) }},
		{"white space", func(t *testing.T, dir, _ string) { secretmount.Write(t, dir, map[string]string{"token": " \t\n"}) }},
		{"line break inside", func(t *testing.T, dir, _ string) { secretmount.Write(t, dir, map[string]string{"token": "a\nb\n"}) }},
		{"key gone from the Secret", func(t *testing.T, dir, _ string) { secretmount.Write(t, dir, map[string]string{"other": "x"}) }},
		{"file removed", func(t *testing.T, _, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"unreadable", func(t *testing.T, dir, _ string) {
			p := secretmount.Write(t, dir, map[string]string{"token": "token-unreadable"})["token"]
			if err := os.Chmod(p, 0); err != nil {
				t.Fatal(err)
			}
			if os.Geteuid() == 0 {
				t.Skip("root reads a file of mode 0: run as another user to test it")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := secretmount.Write(t, dir, map[string]string{"token": "token-one\n"})["token"]
			log, count := logLines()
			s, err := NewSecretFile(path, log)
			if err != nil {
				t.Fatal(err)
			}
			tc.spoil(t, dir, path)
			for range 5 {
				if got := s.Value().Reveal(); got != "token-one" {
					t.Fatalf("Value() = %q after a bad rotation, want the last good token-one", got)
				}
			}
			if n := count("WARN"); n != 1 {
				t.Errorf("%d warnings after 5 calls on an unusable file, want 1", n)
			}
			if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
				if err := os.Symlink(filepath.Join("..data", "token"), path); err != nil {
					t.Fatal(err)
				}
			}
			secretmount.Write(t, dir, map[string]string{"token": "token-two\n"})
			if got := s.Value().Reveal(); got != "token-two" {
				t.Fatalf("Value() = %q after a good rotation, want token-two", got)
			}
			if n := count("INFO"); n != 1 {
				t.Errorf("%d info lines after the file became usable again, want 1", n)
			}
		})
	}
}

// TestNewSecretFileRefusesUnusable: a file unusable at the start is an
// error naming the file, never showing the secret.
func TestNewSecretFileRefusesUnusable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path string
		want       error
	}{
		{"missing", filepath.Join(dir, "none"), fs.ErrNotExist},
		{"empty", write("empty", "\n"), ErrInvalid},
		{"line break inside", write("two-lines", "s3cret\nmore\n"), ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewSecretFile(tc.path, nil)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.path) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("NewSecretFile(%s) = %v, want an error wrapping %v naming the file, not the secret", tc.name, err, tc.want)
			}
		})
	}
}

// TestSecretFileConcurrentRotation: calls racing with rotations get one of
// the secrets written, never a torn or empty one (run with -race).
func TestSecretFileConcurrentRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := secretmount.Write(t, dir, map[string]string{"token": "token-0"})["token"]
	s, err := NewSecretFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	written := map[string]bool{"token-0": true}
	for _, v := range []string{"token-1", "token-2", "token-3"} {
		written[v] = true
	}
	var wg sync.WaitGroup
	got := make(chan string, 4*200) // every value read; drained after Wait
	for range 4 {
		wg.Go(func() {
			for range 200 {
				got <- s.Value().Reveal()
			}
		})
	}
	for _, v := range []string{"token-1", "token-2", "token-3"} {
		secretmount.Write(t, dir, map[string]string{"token": v})
	}
	wg.Wait()
	close(got)
	for v := range got {
		if !written[v] {
			t.Fatalf("Value() = %q, not a secret that was written", v)
		}
	}
	if v := s.Value().Reveal(); v != "token-3" {
		t.Errorf("Value() = %q after the last rotation, want token-3", v)
	}
}
