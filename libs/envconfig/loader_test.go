package envconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// tcase is one table row: the environment, the value the getter should
// return and the exact error message ("" for none).
type tcase[T any] struct {
	name    string
	env     map[string]string
	want    T
	wantErr string
}

// runCases runs get against each row on a fresh Loader.
func runCases[T any](t *testing.T, get func(*Loader) T, tests []tcase[T]) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := New(Map(tc.env))
			got := get(l)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("value mismatch (-want +got):\n%s", diff)
			}
			gotErr := ""
			if err := l.Err(); err != nil {
				gotErr = err.Error()
			}
			if gotErr != tc.wantErr {
				t.Errorf("error:\n got %q\nwant %q", gotErr, tc.wantErr)
			}
		})
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	runCases(t, func(l *Loader) string { return l.String("NAME", "def") }, []tcase[string]{
		{name: "unset", env: nil, want: "def"},
		{name: "empty uses default", env: map[string]string{"NAME": ""}, want: "def"},
		{name: "verbatim", env: map[string]string{"NAME": " a b "}, want: " a b "},
	})
}

func TestRequired(t *testing.T) {
	t.Parallel()
	runCases(t, func(l *Loader) string { return l.Required("API_ADDR") }, []tcase[string]{
		{name: "set", env: map[string]string{"API_ADDR": "x"}, want: "x"},
		{name: "unset", want: "", wantErr: `API_ADDR: required, want a non-empty value, got nothing`},
		{name: "empty", env: map[string]string{"API_ADDR": ""}, want: "", wantErr: `API_ADDR: required, want a non-empty value, got nothing`},
	})
}

func TestBool(t *testing.T) {
	t.Parallel()
	runCases(t, func(l *Loader) bool { return l.Bool("FLAG", true) }, []tcase[bool]{
		{name: "unset", want: true},
		{name: "false", env: map[string]string{"FLAG": "false"}, want: false},
		{name: "0 with spaces", env: map[string]string{"FLAG": " 0 "}, want: false},
		{name: "TRUE", env: map[string]string{"FLAG": "TRUE"}, want: true},
		{name: "bad", env: map[string]string{"FLAG": "yes"}, want: true, wantErr: `FLAG: want true or false, got "yes"`},
	})
}

func TestInt(t *testing.T) {
	t.Parallel()
	runCases(t, func(l *Loader) int { return l.Int("WORKERS", 4, 1, 64) }, []tcase[int]{
		{name: "unset", want: 4},
		{name: "ok", env: map[string]string{"WORKERS": "16"}, want: 16},
		{name: "min edge", env: map[string]string{"WORKERS": "1"}, want: 1},
		{name: "max edge", env: map[string]string{"WORKERS": "64"}, want: 64},
		{name: "below", env: map[string]string{"WORKERS": "0"}, want: 4, wantErr: `WORKERS: want an integer with 1 <= N <= 64, got "0"`},
		{name: "above", env: map[string]string{"WORKERS": "65"}, want: 4, wantErr: `WORKERS: want an integer with 1 <= N <= 64, got "65"`},
		{name: "not a number", env: map[string]string{"WORKERS": "four"}, want: 4, wantErr: `WORKERS: want an integer with 1 <= N <= 64, got "four"`},
	})
}

func TestDuration(t *testing.T) {
	t.Parallel()
	const want = `ACK_WAIT: want a non-negative Go duration such as "30s" or "1m30s", got `
	runCases(t, func(l *Loader) time.Duration { return l.Duration("ACK_WAIT", 30*time.Second) }, []tcase[time.Duration]{
		{name: "unset", want: 30 * time.Second},
		{name: "ok", env: map[string]string{"ACK_WAIT": "1m30s"}, want: 90 * time.Second},
		{name: "zero", env: map[string]string{"ACK_WAIT": "0"}, want: 0},
		{name: "bare number", env: map[string]string{"ACK_WAIT": "30"}, want: 30 * time.Second, wantErr: want + `"30"`},
		{name: "negative", env: map[string]string{"ACK_WAIT": "-1s"}, want: 30 * time.Second, wantErr: want + `"-1s"`},
		{name: "garbage", env: map[string]string{"ACK_WAIT": "soon"}, want: 30 * time.Second, wantErr: want + `"soon"`},
	})
}

func TestURL(t *testing.T) {
	t.Parallel()
	get := func(l *Loader) string {
		u := l.URL("NATS_URL", "nats://127.0.0.1:4222", "nats", "tls")
		if u == nil {
			return "<nil>"
		}
		return u.String()
	}
	const want = `NATS_URL: want an absolute URL with scheme nats|tls, got `
	runCases(t, get, []tcase[string]{
		{name: "unset uses default", want: "nats://127.0.0.1:4222"},
		{name: "ok", env: map[string]string{"NATS_URL": "tls://nats:4222"}, want: "tls://nats:4222"},
		{name: "wrong scheme", env: map[string]string{"NATS_URL": "http://nats:4222"}, want: "<nil>", wantErr: want + `"http://nats:4222"`},
		{name: "no scheme", env: map[string]string{"NATS_URL": "nats:4222"}, want: "<nil>", wantErr: want + `"nats:4222"`},
		{name: "unparsable", env: map[string]string{"NATS_URL": "nats://[::1"}, want: "<nil>", wantErr: want + `"nats://[::1"`},
		// The value is quoted in the error, but never its credentials.
		{name: "bad with password", env: map[string]string{"NATS_URL": "http://svc:s3cret@nats:4222"}, want: "<nil>",
			wantErr: want + `"http://svc:xxxxx@nats:4222"`},
		{name: "unparsable with token", env: map[string]string{"NATS_URL": "nats://t0ken@[::1"}, want: "<nil>", wantErr: want + `"nats://xxxxx@[::1"`},
	})
	runCases(t, func(l *Loader) string {
		if u := l.URL("OTEL_EXPORTER_OTLP_ENDPOINT", ""); u != nil {
			return u.String()
		}
		return "<nil>"
	}, []tcase[string]{
		{name: "no default gives nil", want: "<nil>"},
		{name: "any scheme", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"}, want: "http://otel:4317"},
		{name: "no host", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "file:///x"}, want: "<nil>",
			wantErr: `OTEL_EXPORTER_OTLP_ENDPOINT: want an absolute URL such as "scheme://host:port", got "file:///x"`},
	})
}

func TestHostPort(t *testing.T) {
	t.Parallel()
	const want = `LISTEN_ADDR: want "HOST:PORT" with 0 <= PORT <= 65535, got `
	runCases(t, func(l *Loader) string { return l.HostPort("LISTEN_ADDR", ":8080") }, []tcase[string]{
		{name: "unset", want: ":8080"},
		{name: "host and port", env: map[string]string{"LISTEN_ADDR": "127.0.0.1:0"}, want: "127.0.0.1:0"},
		{name: "ipv6", env: map[string]string{"LISTEN_ADDR": "[::1]:9090"}, want: "[::1]:9090"},
		{name: "no port", env: map[string]string{"LISTEN_ADDR": "localhost"}, want: ":8080", wantErr: want + `"localhost"`},
		{name: "port too big", env: map[string]string{"LISTEN_ADDR": ":65536"}, want: ":8080", wantErr: want + `":65536"`},
		{name: "named port", env: map[string]string{"LISTEN_ADDR": ":http"}, want: ":8080", wantErr: want + `":http"`},
		{name: "space in the host", env: map[string]string{"LISTEN_ADDR": "bad host:9090"}, want: ":8080", wantErr: want + `"bad host:9090"`},
	})
	const dial = `API_ADDR: want "HOST:PORT" with a host and 1 <= PORT <= 65535, got `
	runCases(t, func(l *Loader) string { return l.DialAddr("API_ADDR", "localhost:8001") }, []tcase[string]{
		{name: "dial address", env: map[string]string{"API_ADDR": "api.example:9000"}, want: "api.example:9000"},
		{name: "dial port 0", env: map[string]string{"API_ADDR": "localhost:0"}, want: "localhost:8001", wantErr: dial + `"localhost:0"`},
		{name: "dial without host", env: map[string]string{"API_ADDR": ":9000"}, want: "localhost:8001", wantErr: dial + `":9000"`},
	})
}

func TestPortRange(t *testing.T) {
	t.Parallel()
	def := PortRange{Low: 9100, High: 9199}
	const want = `LOCAL_PORT_RANGE: want "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535, got `
	runCases(t, func(l *Loader) PortRange { return l.PortRange("LOCAL_PORT_RANGE", def) }, []tcase[PortRange]{
		{name: "unset", want: def},
		{name: "ok", env: map[string]string{"LOCAL_PORT_RANGE": "20000-20010"}, want: PortRange{Low: 20000, High: 20010}},
		{name: "single port", env: map[string]string{"LOCAL_PORT_RANGE": "80-80"}, want: PortRange{Low: 80, High: 80}},
		{name: "full range", env: map[string]string{"LOCAL_PORT_RANGE": "1-65535"}, want: PortRange{Low: 1, High: 65535}},
		{name: "abc", env: map[string]string{"LOCAL_PORT_RANGE": "abc"}, want: def, wantErr: want + `"abc"`},
		{name: "reversed", env: map[string]string{"LOCAL_PORT_RANGE": "9199-9100"}, want: def, wantErr: want + `"9199-9100"`},
		{name: "zero low", env: map[string]string{"LOCAL_PORT_RANGE": "0-10"}, want: def, wantErr: want + `"0-10"`},
		{name: "too high", env: map[string]string{"LOCAL_PORT_RANGE": "1-65536"}, want: def, wantErr: want + `"1-65536"`},
		{name: "signed", env: map[string]string{"LOCAL_PORT_RANGE": "+1-2"}, want: def, wantErr: want + `"+1-2"`},
		{name: "one number", env: map[string]string{"LOCAL_PORT_RANGE": "9100"}, want: def, wantErr: want + `"9100"`},
		{name: "three parts", env: map[string]string{"LOCAL_PORT_RANGE": "1-2-3"}, want: def, wantErr: want + `"1-2-3"`},
	})
}

func TestEnum(t *testing.T) {
	t.Parallel()
	runCases(t, func(l *Loader) string { return l.Enum("LOG_LEVEL", "info", "debug", "info", "warn", "error") }, []tcase[string]{
		{name: "unset", want: "info"},
		{name: "exact", env: map[string]string{"LOG_LEVEL": "warn"}, want: "warn"},
		{name: "case folded", env: map[string]string{"LOG_LEVEL": "DEBUG"}, want: "debug"},
		{name: "bad", env: map[string]string{"LOG_LEVEL": "verbose"}, want: "info", wantErr: `LOG_LEVEL: want one of debug|info|warn|error, got "verbose"`},
	})
}

func TestList(t *testing.T) {
	t.Parallel()
	runCases(t, func(l *Loader) []string { return l.List("RESOURCES", []string{"sessions"}) }, []tcase[[]string]{
		{name: "unset", want: []string{"sessions"}},
		{name: "items trimmed", env: map[string]string{"RESOURCES": " sessions , projects,,"}, want: []string{"sessions", "projects"}},
		// Set, yet naming nothing: refused, not taken for unset.
		{name: "only commas", env: map[string]string{"RESOURCES": ",,"}, want: []string{"sessions"},
			wantErr: `RESOURCES: want comma-separated non-empty items, got ",,"`},
	})
}

func TestFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nope.pem")
	const want = `CA_FILE: want a path to an existing regular file, got `
	runCases(t, func(l *Loader) string { return l.File("CA_FILE", "") }, []tcase[string]{
		{name: "unset", want: ""},
		{name: "exists", env: map[string]string{"CA_FILE": file}, want: file},
		{name: "directory", env: map[string]string{"CA_FILE": dir}, want: "", wantErr: want + fmt.Sprintf("%q", dir)},
		{name: "missing", env: map[string]string{"CA_FILE": missing}, want: "",
			wantErr: want + fmt.Sprintf("%q: stat %s: no such file or directory", missing, missing)},
	})
}

func TestSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file, empty := filepath.Join(dir, "token"), filepath.Join(dir, "empty")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	blank, twoLines := filepath.Join(dir, "blank"), filepath.Join(dir, "two-lines")
	if err := os.WriteFile(blank, []byte("  \t \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(twoLines, []byte("first\nsecond\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nope")
	runCases(t, func(l *Loader) string { return l.Secret("API_TOKEN").Reveal() }, []tcase[string]{
		{name: "unset", want: ""},
		{name: "set", env: map[string]string{"API_TOKEN": "s3cret"}, want: "s3cret"},
		{name: "file, trailing newline trimmed", env: map[string]string{"API_TOKEN_FILE": file}, want: "from-file"},
		{name: "both", env: map[string]string{"API_TOKEN": "s3cret", "API_TOKEN_FILE": file}, want: "",
			wantErr: fmt.Sprintf(`API_TOKEN_FILE: want unset when API_TOKEN is set (one of the two), got %q`, file)},
		{name: "missing file", env: map[string]string{"API_TOKEN_FILE": missing}, want: "",
			wantErr: fmt.Sprintf(`API_TOKEN_FILE: want a path to an existing regular file holding the secret, got %q: open %s: no such file or directory`, missing, missing)},
		{name: "empty file", env: map[string]string{"API_TOKEN_FILE": empty}, want: "",
			wantErr: fmt.Sprintf(`API_TOKEN_FILE: want a secret, not empty or only white space, got %q`, empty+" (empty)")},
		{name: "white space file", env: map[string]string{"API_TOKEN_FILE": blank}, want: "",
			wantErr: fmt.Sprintf(`API_TOKEN_FILE: want a secret, not empty or only white space, got %q`, blank+" (empty)")},
		{name: "file path of white space", env: map[string]string{"API_TOKEN_FILE": "  "}, want: "",
			wantErr: `API_TOKEN_FILE: want a path to a file holding the secret, got "only white space"`},
		// A Kubernetes secretKeyRef keeps the file's trailing newline.
		{name: "variable with a trailing newline", env: map[string]string{"API_TOKEN": "s3cret\r\n"}, want: "s3cret"},
		{name: "variable of white space", env: map[string]string{"API_TOKEN": "   "}, want: "",
			wantErr: `API_TOKEN: want a secret, not empty or only white space, got "the value (empty)"`},
		{name: "line break inside", env: map[string]string{"API_TOKEN": "s3\ncret"}, want: "",
			wantErr: `API_TOKEN: want a secret without control characters (a line break or tab inside?), got "the value (not shown)"`},
		{name: "file with a line break inside", env: map[string]string{"API_TOKEN_FILE": twoLines}, want: "",
			wantErr: fmt.Sprintf(`API_TOKEN_FILE: want a secret without control characters (a line break or tab inside?), got %q`, twoLines+" (not shown)")},
	})
	runCases(t, func(l *Loader) string { return l.RequiredSecret("API_TOKEN").Reveal() }, []tcase[string]{
		{name: "required set", env: map[string]string{"API_TOKEN": "s3cret"}, want: "s3cret"},
		{name: "required from a file", env: map[string]string{"API_TOKEN_FILE": file}, want: "from-file"},
		{name: "required unset", want: "", wantErr: `API_TOKEN: required, want a non-empty value (or API_TOKEN_FILE), got nothing`},
		// Set but unusable: one error saying why, not also "got nothing".
		{name: "required, white space", env: map[string]string{"API_TOKEN": "  "}, want: "",
			wantErr: `API_TOKEN: want a secret, not empty or only white space, got "the value (empty)"`},
		{name: "required, bad file", env: map[string]string{"API_TOKEN_FILE": missing}, want: "",
			wantErr: fmt.Sprintf(`API_TOKEN_FILE: want a path to an existing regular file holding the secret, got %q: open %s: no such file or directory`, missing, missing)},
	})
}

// TestErrJoinsAll checks that every problem is reported at once, in read
// order, each matching its sentinel through the join.
func TestErrJoinsAll(t *testing.T) {
	t.Parallel()
	l := New(Map(map[string]string{
		"A_INT":   "x",
		"B_DUR":   "y",
		"C_RANGE": "abc",
		"D_OK":    "true",
	}))
	l.Int("A_INT", 1, 0, 10)
	l.Duration("B_DUR", time.Second)
	l.PortRange("C_RANGE", PortRange{Low: 1, High: 2})
	l.Bool("D_OK", false)
	l.Required("E_REQ")
	err := l.Err()
	want := strings.Join([]string{
		`A_INT: want an integer with 0 <= N <= 10, got "x"`,
		`B_DUR: want a non-negative Go duration such as "30s" or "1m30s", got "y"`,
		`C_RANGE: want "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535, got "abc"`,
		`E_REQ: required, want a non-empty value, got nothing`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Fatalf("Err():\n got %v\nwant %s", err, want)
	}
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrMissing) {
		t.Errorf("errors.Is(ErrInvalid)=%v errors.Is(ErrMissing)=%v, want both true",
			errors.Is(err, ErrInvalid), errors.Is(err, ErrMissing))
	}
	var ve *VarError
	if !errors.As(err, &ve) || ve.Name != "A_INT" {
		t.Errorf("errors.As first VarError = %+v, want Name A_INT", ve)
	}
	if New(Map(nil)).Err() != nil {
		t.Error("fresh loader Err() != nil")
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	l := New(Map(map[string]string{"B": "1"}))
	l.String("B", "")
	l.Int("A", 0, 0, 1)
	l.String("B", "") // read twice, listed once
	l.Secret("C")
	want := []string{"B", "A", "C", "C_FILE"} // a secret may come from a file
	if diff := cmp.Diff(want, l.Names()); diff != "" {
		t.Errorf("Names() mismatch (-want +got):\n%s", diff)
	}
}

func TestNewDefaultsToProcessEnv(t *testing.T) {
	t.Setenv("ENVCONFIG_TEST_VAR", "from-env")
	if got := New(nil).String("ENVCONFIG_TEST_VAR", ""); got != "from-env" {
		t.Errorf("String() = %q, want %q", got, "from-env")
	}
}

func TestRedacted(t *testing.T) {
	t.Parallel()
	type cfg struct {
		User  string
		Token Redacted
	}
	c := cfg{User: "bob", Token: "s3cret"}
	var logBuf strings.Builder
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("config", slog.Any("token", c.Token), slog.Any("cfg", c))
	tests := []struct {
		name string
		got  string
	}{
		{name: "%v", got: fmt.Sprintf("%v", c.Token)},
		{name: "%s", got: fmt.Sprintf("%s", c.Token)},
		{name: "%q", got: fmt.Sprintf("%q", c.Token)},
		{name: "%d", got: fmt.Sprintf("%d", c.Token)},
		{name: "%x", got: fmt.Sprintf("%x", c.Token)},
		{name: "%+v struct", got: fmt.Sprintf("%+v", c)},
		{name: "%#v struct", got: fmt.Sprintf("%#v", c)},
		{name: "slog json", got: logBuf.String()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if strings.Contains(tc.got, "s3cret") || !strings.Contains(tc.got, redactedText) {
				t.Errorf("output %q leaks the secret or lacks %q", tc.got, redactedText)
			}
		})
	}
	if got := Redacted("").String(); got != "" {
		t.Errorf("empty Redacted String() = %q, want empty", got)
	}
}

func TestLoaderIntSet(t *testing.T) {
	l := New(Map(map[string]string{"GOOD": "0-2,7", "BAD": "0-99", "NONE": " , "}))
	if got := l.IntSet("GOOD", 16); !slices.Equal(got, []int{0, 1, 2, 7}) {
		t.Errorf("IntSet(GOOD) = %v", got)
	}
	if got := l.IntSet("UNSET", 16); got != nil {
		t.Errorf("IntSet(UNSET) = %v, want nil", got)
	}
	if got := l.IntSet("BAD", 16); got != nil {
		t.Errorf("IntSet(BAD) = %v, want nil", got)
	}
	var ve *VarError
	if err := l.Err(); !errors.As(err, &ve) || ve.Name != "BAD" {
		t.Fatalf("Err() = %v, want a VarError naming BAD", err)
	}
	// Set, yet naming nothing: refused, not taken for unset (all).
	if got := l.IntSet("NONE", 16); got != nil || !strings.Contains(l.Err().Error(), "NONE: want") {
		t.Errorf("IntSet(NONE) = %v, Err() = %v; want nil and an error naming NONE", got, l.Err())
	}
}

func TestLoaderURLList(t *testing.T) {
	l := New(Map(map[string]string{
		"GOOD":      "nats://a:4222, tls://b:4222",
		"BADSCHEME": "nats://a:4222,http://b:80",
		"NOHOST":    "nats://",
		"BADPORT":   "nats://a:99999",
		"SECRET":    "nats://svc:s3cret@a:4222,http://t0ken@b:80",
	}))
	if got := l.URLList("GOOD", "def", "nats", "tls"); got != "nats://a:4222, tls://b:4222" {
		t.Errorf("URLList(GOOD) = %q", got)
	}
	if got := l.URLList("UNSET", "nats://d:4222", "nats"); got != "nats://d:4222" {
		t.Errorf("URLList(UNSET) = %q, want the default", got)
	}
	if l.Err() != nil {
		t.Fatalf("Err() = %v after valid values", l.Err())
	}
	for _, name := range []string{"BADSCHEME", "NOHOST", "BADPORT"} {
		if got := l.URLList(name, "def", "nats", "tls"); got != "def" {
			t.Errorf("URLList(%s) = %q, want the default", name, got)
		}
	}
	if got := l.URLList("SECRET", "def", "nats"); got != "def" {
		t.Errorf("URLList(SECRET) = %q, want the default", got)
	}
	err := l.Err()
	for _, name := range []string{"BADSCHEME", "NOHOST", "BADPORT", "SECRET"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Err() = %v, want it to name %s", err, name)
		}
	}
	for _, secret := range []string{"s3cret", "t0ken"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Err() = %v quotes the credential %q", err, secret)
		}
	}
}
