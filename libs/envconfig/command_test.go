package envconfig

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestParseCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		line    string
		want    []string
		wantErr bool
	}{
		{name: "program only", line: "/usr/local/bin/demo-runner", want: []string{"/usr/local/bin/demo-runner"}},
		{name: "interpreter and script", line: "node runner.mjs", want: []string{"node", "runner.mjs"}},
		{name: "double quotes", line: `python "my runner.py"`, want: []string{"python", "my runner.py"}},
		{name: "single quotes and flags", line: `sh 'run me.sh' --greeting 'hello there' -v`, want: []string{"sh", "run me.sh", "--greeting", "hello there", "-v"}},
		{name: "escapes", line: `a\ b "c\"d" 'e\f'`, want: []string{"a b", `c"d`, `e\f`}},
		{name: "quotes join a word", line: `--name='it'\''s'`, want: []string{"--name=it's"}},
		{name: "empty argument", line: `prog ''`, want: []string{"prog", ""}},
		{name: "no expansion", line: `prog $HOME ~/x *.py`, want: []string{"prog", "$HOME", "~/x", "*.py"}},
		{name: "surrounding white space", line: "\t prog  a\n", want: []string{"prog", "a"}},
		{name: "comment", line: "prog a #b c", want: []string{"prog", "a"}},
		{name: "hash inside a word", line: "prog a#b", want: []string{"prog", "a#b"}},
		{name: "unterminated single quote", line: "python 'x", wantErr: true},
		{name: "unterminated double quote", line: `python "x`, wantErr: true},
		{name: "trailing escape", line: `python x\`, wantErr: true},
		{name: "empty", line: "", wantErr: true},
		{name: "blank", line: "  \t", wantErr: true},
		{name: "only a comment", line: "# nothing", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseCommand(tc.line)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseCommand(%q) = %q, %v; want an error wrapping ErrInvalid", tc.line, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCommand(%q): %v", tc.line, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseCommand(%q) (-want +got):\n%s", tc.line, diff)
			}
		})
	}
}

func TestQuoteCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		argv []string
		want string
	}{
		{[]string{"/opt/bin/demo-runner"}, "/opt/bin/demo-runner"},
		{[]string{"/my bins/demo-runner", "--a=b"}, "'/my bins/demo-runner' --a=b"},
		{[]string{"it's", "", "#x", "$HOME", "a\nb"}, `'it'\''s' '' '#x' '$HOME' 'a` + "\n" + `b'`},
	}
	for _, tc := range tests {
		got := QuoteCommand(tc.argv...)
		if got != tc.want {
			t.Errorf("QuoteCommand(%q) = %q, want %q", tc.argv, got, tc.want)
		}
		back, err := ParseCommand(got)
		if err != nil || !cmp.Equal(back, tc.argv) {
			t.Errorf("ParseCommand(%q) = %q, %v; want %q", got, back, err, tc.argv)
		}
	}
}

// FuzzParseCommand: any line either fails with ErrInvalid or gives a program
// and arguments that QuoteCommand writes back into an equivalent line.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"node runner.mjs", `python "my runner.py"`, `sh 'a b' --x 'it'\''s'`, "a #b", `"x\"`, "'", `\`, "\xff\xfe", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		argv, err := ParseCommand(line)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseCommand(%q) error %v does not wrap ErrInvalid", line, err)
			}
			return
		}
		if len(argv) == 0 {
			t.Fatalf("ParseCommand(%q) returned no program and no error", line)
		}
		back, err := ParseCommand(QuoteCommand(argv...))
		if err != nil || !cmp.Equal(back, argv) {
			t.Fatalf("round trip of %q: got %q, %v", argv, back, err)
		}
	})
}

// FuzzQuoteCommand: any words (valid UTF-8) survive QuoteCommand and
// ParseCommand exactly.
func FuzzQuoteCommand(f *testing.F) {
	f.Add("prog", "it's", "")
	f.Add("/a b/c", "#x", `"\`)
	f.Add("-", "\t\n", "$(rm -rf /)")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		argv := []string{a, b, c}
		for _, w := range argv {
			if !utf8.ValidString(w) {
				t.Skip("the lexer replaces invalid UTF-8")
			}
		}
		if a == "" {
			argv[0] = "prog" // a line needs a program
		}
		line := QuoteCommand(argv...)
		back, err := ParseCommand(line)
		if err != nil || !cmp.Equal(back, argv) {
			t.Fatalf("ParseCommand(QuoteCommand(%q)) = %q (line %q), %v", argv, back, line, err)
		}
	})
}

func TestResolveCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, f := range []string{"runner.mjs", "scripts/my runner.sh"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	abs := func(p string) string { return filepath.Join(dir, p) }
	tests := []struct {
		name string
		argv []string
		want []string
	}{
		{"bare program is looked up in PATH", []string{"node"}, []string{"node"}},
		{"program with a slash", []string{"bin/demo-runner"}, []string{abs("bin/demo-runner")}},
		{"dot program", []string{"./run"}, []string{abs("run")}},
		{"absolute stays", []string{"/usr/bin/env", "/etc/hosts"}, []string{"/usr/bin/env", "/etc/hosts"}},
		{"existing script", []string{"node", "runner.mjs", "--port", "1"}, []string{"node", abs("runner.mjs"), "--port", "1"}},
		{"script with a space", []string{"sh", "scripts/my runner.sh"}, []string{"sh", abs("scripts/my runner.sh")}},
		{"missing file stays", []string{"python", "local_entry.py"}, []string{"python", "local_entry.py"}},
		{"directory stays", []string{"ls", "scripts"}, []string{"ls", "scripts"}},
		{"flags stay", []string{"prog", "-runner.mjs", ""}, []string{"prog", "-runner.mjs", ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := append([]string(nil), tc.argv...)
			got := ResolveCommand(tc.argv, dir)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ResolveCommand(%q) (-want +got):\n%s", tc.argv, diff)
			}
			if !cmp.Equal(in, tc.argv) {
				t.Errorf("ResolveCommand modified its input: %q", tc.argv)
			}
		})
	}
}

func TestLoaderCommand(t *testing.T) {
	t.Parallel()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	runCases(t, func(l *Loader) []string { return l.Command("CMD", "python local_entry.py") }, []tcase[[]string]{
		{name: "unset", want: []string{"python", "local_entry.py"}},
		{name: "quoted", env: map[string]string{"CMD": `sh "my runner.sh" --x 'a b'`}, want: []string{"sh", "my runner.sh", "--x", "a b"}},
		{name: "relative program resolved against the working directory", env: map[string]string{"CMD": "bin/demo-runner"},
			want: []string{filepath.Join(wd, "bin/demo-runner")}},
		{name: "existing file argument resolved", env: map[string]string{"CMD": "cat command_test.go"},
			want: []string{"cat", filepath.Join(wd, "command_test.go")}},
		{name: "bad", env: map[string]string{"CMD": "python 'x"}, want: nil,
			wantErr: `CMD: want ` + wantCommand + `, got "python 'x": invalid variable value: EOF found when expecting closing quote`},
	})
}
