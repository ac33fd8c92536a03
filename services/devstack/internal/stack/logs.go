package stack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// logWriter serialises the children's output onto one writer, one whole line
// at a time, each prefixed with the service name. JSON log lines (slog) are
// shown as "time LEVEL message key=value ..." unless raw is set.
type logWriter struct {
	mu    sync.Mutex // guards out
	out   io.Writer
	raw   bool
	width int
}

func (l *logWriter) prefixed(name string) *lineWriter {
	return &lineWriter{parent: l, prefix: fmt.Sprintf("%-*s | ", l.width, name)}
}

func (l *logWriter) writeLine(prefix string, line []byte) {
	text := string(line)
	if !l.raw {
		text = prettyLine(line)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.out, prefix+text)
}

// lineWriter buffers partial lines of one child. Whoever knows the child
// exited flushes it: its last line may lack the newline, and would
// otherwise never be shown, or be glued to the next run's first line.
type lineWriter struct {
	parent *logWriter
	prefix string
	mu     sync.Mutex // guards buf
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.parent.writeLine(w.prefix, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// flush writes the pending partial line, if any, as a line of its own.
// Call it once the child has exited and its output was copied (after
// exec.Cmd.Wait), so no later write continues that line.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) == 0 {
		return
	}
	w.parent.writeLine(w.prefix, w.buf)
	w.buf = w.buf[:0]
}

func prettyLine(line []byte) string {
	var rec map[string]json.RawMessage
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &rec) != nil {
		return string(line)
	}
	str := func(k string) string {
		var s string
		if v, ok := rec[k]; ok && json.Unmarshal(v, &s) == nil {
			delete(rec, k)
			return s
		}
		return ""
	}
	ts, level, msg := str("time"), str("level"), str("msg")
	if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
		ts = t.Local().Format("15:04:05.000")
	}
	keys := make([]string, 0, len(rec))
	for k := range rec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-5s %s", ts, level, msg)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, strings.Trim(string(rec[k]), `"`))
	}
	return b.String()
}
