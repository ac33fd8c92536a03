package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// RequireDocumented keeps a configuration reference true. It calls load with
// a lookup that answers "unset" for every name and records each name asked,
// then reads the markdown file docPath and checks that every recorded name
// appears as `NAME` (in backticks) inside the section that starts at the
// heading line heading (e.g. "## informer") and ends at the next heading of
// the same or a higher level. Each missing name is reported with t.Errorf.
//
// load should call the service's config loader with the lookup and ignore
// the error: required variables are missing on purpose.
func RequireDocumented(t testing.TB, docPath, heading string, load func(lookup envconfig.LookupFunc)) {
	t.Helper()
	var names []string
	seen := map[string]bool{}
	load(func(name string) (string, bool) {
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
		return "", false
	})
	if len(names) == 0 {
		t.Errorf("%s %q: the load func asked for no variables; it must call the config loader with the lookup", docPath, heading)
		return
	}
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Errorf("read %s: %v", docPath, err)
		return
	}
	section, err := markdownSection(doc, heading)
	if err != nil {
		t.Errorf("%s: %v", docPath, err)
		return
	}
	for _, name := range names {
		if !strings.Contains(section, "`"+name+"`") {
			t.Errorf("%s is read by the code but not documented as `%s` in %s under %q", name, name, docPath, heading)
		}
	}
}

// markdownSection returns the lines after the heading line heading up to the
// next heading of the same or a higher level (fewer or equal '#'), ignoring
// '#' lines inside fenced code blocks.
func markdownSection(doc []byte, heading string) (string, error) {
	level := headingLevel(heading)
	if level == 0 {
		return "", fmt.Errorf("%q is not a markdown heading (want e.g. \"## name\")", heading)
	}
	var (
		out     strings.Builder
		found   bool
		inFence bool
	)
	sc := bufio.NewScanner(bytes.NewReader(doc))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			inFence = !inFence
		}
		if !inFence {
			if !found {
				found = strings.TrimRight(line, " \t") == heading
				continue
			}
			if l := headingLevel(line); l > 0 && l <= level {
				break
			}
		}
		if found {
			out.WriteString(line)
			out.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("scan: %w", err)
	}
	if !found {
		return "", fmt.Errorf("no heading line %q", heading)
	}
	return out.String(), nil
}

// headingLevel is the number of leading '#' of an ATX heading line ("## x"
// is 2), or 0 when line is not a heading.
func headingLevel(line string) int {
	n := 0
	for n < len(line) && line[n] == '#' {
		n++
	}
	if n == 0 || n > 6 || n == len(line) || (line[n] != ' ' && line[n] != '\t') {
		return 0
	}
	return n
}
