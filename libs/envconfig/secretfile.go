package envconfig

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// ReadSecretFile reads the secret in the file at path as a NAME_FILE
// variable's file is read (see [FileSuffix]): trailing line breaks are
// dropped, and what remains must be printable and not only white space.
// It returns the read error (wrapping [io/fs.ErrNotExist] and the like), or
// an error wrapping [ErrInvalid] for a file that holds no usable secret;
// neither shows the secret.
func ReadSecretFile(path string) (Redacted, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret file: %w", err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if want, shown := secretProblem(v); want != "" {
		return "", fmt.Errorf("secret file %s%s: want %s: %w", path, shown, want, ErrInvalid)
	}
	return Redacted(v), nil
}

// SecretFile is a secret in a file that may be replaced while the process
// runs: a mounted Kubernetes Secret, which the kubelet updates in place
// within about a minute of a change to the Secret (it writes the new files
// into a new directory and swaps the ..data symlink to it atomically, so a
// reader never sees half a file).
//
// [SecretFile.Value] costs one stat of the path per call: the file is read
// again only when the stat differs from that of the last read (another
// file behind the path, as after the kubelet's swap, or another
// modification time or size, as after an edit in place). A file that
// cannot be read, or holds no usable secret (see [ReadSecretFile]), leaves
// the last good secret in use and logs one warning until the file is
// usable again: a rotation gone wrong must not fail every call, nor flood
// the log with one line per call.
//
// A SecretFile is safe for concurrent use.
type SecretFile struct {
	path string
	log  *slog.Logger

	mu     sync.Mutex
	value  Redacted    // guarded by mu: the last good secret
	seen   os.FileInfo // guarded by mu: the stat before the last read, good or bad; nil: read at the next call
	warned bool        // guarded by mu: the current bad state was logged
}

// NewSecretFile reads the secret in the file at path and returns a
// SecretFile following it. It returns the errors of [ReadSecretFile]: a
// file unusable at the start is a configuration error, not a secret to
// wait for. log hears of a secret read again and of a file that became
// unusable (never the secret); nil discards.
func NewSecretFile(path string, log *slog.Logger) (*SecretFile, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Stat first: a swap between the stat and the read is seen as a change
	// at the next call, which reads the same new file again. The other
	// order could pair the old content with the new file's stat and keep
	// the old secret until the next rotation.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read secret file: %w", err)
	}
	v, err := ReadSecretFile(path)
	if err != nil {
		return nil, err
	}
	return &SecretFile{path: path, log: log, value: v, seen: fi}, nil
}

// Path returns the file's path.
func (s *SecretFile) Path() string { return s.path }

// Value returns the file's secret: read again when the file changed since
// the last read, else (and when the file is not usable now) the last good
// secret.
func (s *SecretFile) Value() Redacted {
	fi, statErr := os.Stat(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if statErr != nil {
		// Gone or unreachable (a volume being unmounted, a path swapped
		// by hand): read as soon as a stat works again.
		s.seen = nil
		s.warn(fmt.Errorf("read secret file: %w", statErr))
		return s.value
	}
	if s.seen != nil && sameFileState(s.seen, fi) {
		return s.value
	}
	s.seen = fi
	v, err := ReadSecretFile(s.path)
	if err != nil {
		s.warn(err)
		return s.value
	}
	if v != s.value || s.warned {
		s.log.Info("secret file read again", slog.String("file", s.path), slog.Bool("changed", v != s.value))
	}
	s.value, s.warned = v, false
	return v
}

// warn logs err once per stretch of unusable file. The caller holds mu.
func (s *SecretFile) warn(err error) {
	if s.warned {
		return
	}
	s.warned = true
	s.log.Warn("secret file unusable, keeping the last secret read", slog.String("file", s.path), slog.Any(logkey.Err, err))
}

// sameFileState reports whether a and b are stats of the same file with the
// same size and modification time. The file's identity catches the
// kubelet's swap even when the new secret has the old one's length and
// was written within the file system's timestamp granularity.
func sameFileState(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
