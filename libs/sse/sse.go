// Package sse reads Server-Sent Events streams the way the official AG-UI
// client does: events are separated by a blank line ("\n\n"), "data:" lines
// of one event are joined with "\n", comment lines (": ping") and unknown
// fields are ignored. It is used by clients (ambientctl chat, tests); the
// proxy itself never re-frames a stream.
package sse

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// DefaultMaxEventBytes bounds one event so a broken upstream cannot make a
// reader buffer without limit.
const DefaultMaxEventBytes = 4 << 20

// ErrEventTooLarge is returned by Next when an event exceeds the reader's
// limit.
var ErrEventTooLarge = errors.New("sse: event too large")

// Event is one parsed SSE event.
type Event struct {
	// Type is the "event:" field; empty means the default "message".
	Type string
	// ID is the "id:" field.
	ID string
	// Data is the "data:" lines joined with "\n".
	Data string
}

// Reader parses events from a stream. It is not safe for concurrent use.
type Reader struct {
	br       *bufio.Reader
	maxBytes int
}

// NewReader returns a Reader over r with DefaultMaxEventBytes.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReader(r), maxBytes: DefaultMaxEventBytes}
}

// Next returns the next event that carries data or a type. It returns io.EOF
// at the end of the stream (a trailing event without its blank line is still
// returned first) and ErrEventTooLarge for an oversize event.
func (r *Reader) Next() (Event, error) {
	var (
		ev      Event
		data    []string
		size    int
		hasData bool
	)
	for {
		line, err := r.br.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return Event{}, fmt.Errorf("read sse stream: %w", err)
		}
		eof := errors.Is(err, io.EOF)
		size += len(line)
		if size > r.maxBytes {
			return Event{}, ErrEventTooLarge
		}
		line = strings.TrimSuffix(line, "\n")
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			if hasData || ev.Type != "" {
				ev.Data = strings.Join(data, "\n")
				return ev, nil
			}
			if eof {
				return Event{}, io.EOF
			}
			size = 0
			continue
		}
		if !strings.HasPrefix(line, ":") {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "data":
				data = append(data, value)
				hasData = true
			case "event":
				ev.Type = value
			case "id":
				ev.ID = value
			}
		}
		if eof {
			if hasData || ev.Type != "" {
				ev.Data = strings.Join(data, "\n")
				return ev, nil
			}
			return Event{}, io.EOF
		}
	}
}
