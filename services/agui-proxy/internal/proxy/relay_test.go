package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// chunkReader returns its data in chunks of the given sizes, like a network
// connection does.
type chunkReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		n = min(n, int(c.sizes[c.i%len(c.sizes)])+1)
		c.i++
	}
	n = copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// bufFlusher records writes and counts flushes.
type bufFlusher struct {
	bytes.Buffer
	flushes int
}

func (b *bufFlusher) Flush() error { b.flushes++; return nil }

// referenceBoundary is atBoundary computed on the whole stream, as SSE
// reads it: every line end ("\r\n", "\n" or "\r") made one "\n", the
// stream is between events when it is empty or ends with a blank line.
func referenceBoundary(s []byte) bool {
	lf := bytes.ReplaceAll(bytes.ReplaceAll(s, []byte("\r\n"), []byte("\n")), []byte("\r"), []byte("\n"))
	return len(s) == 0 || bytes.HasSuffix(lf, []byte("\n\n"))
}

// FuzzRelay checks that the relay passes any byte stream through exactly,
// in any chunking, flushing every chunk, that the incremental frame
// boundary tracking agrees with a whole-stream reference, and that the
// relay reports the frame state of the whole stream (referenceFrames).
func FuzzRelay(f *testing.F) {
	f.Add([]byte("data: {\"type\":\"RUN_STARTED\"}\n\n"), []byte{3, 0, 7})
	f.Add([]byte("event: x\r\ndata: y\r\n\r\n"), []byte{0})
	f.Add([]byte("data: a\r\rdata: b\n\n: c\n\n"), []byte{1, 2})
	f.Add([]byte("data: a\n\r\ndata: b\r\n\ndata: c\r\r\ndata: d\n\r"), []byte{1, 3})
	f.Add([]byte{0, 1, 2, 255, '\n', '\r'}, []byte{})
	f.Add([]byte("data: {\"type\":\"RUN_FINISHED\"}\n\n: ping\n\n"), []byte{5, 30})
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		var out bufFlusher
		src := &chunkReader{data: bytes.Clone(data), sizes: sizes}
		res := relay(&out, src, make([]byte, relayBufSize), encodingSSE, 0, func() {})
		if res.ClientErr != nil || res.UpstreamErr != nil || res.Bytes != int64(len(data)) {
			t.Fatalf("relay result %+v for %d bytes", res, len(data))
		}
		if boundary, terminal := referenceSSE(data); res.AtBoundary != boundary || res.Terminal != terminal {
			t.Fatalf("relay reports boundary %v, terminal %v; the whole stream says %v, %v", res.AtBoundary, res.Terminal, boundary, terminal)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("relayed bytes differ")
		}
		if src.i > 0 && out.flushes < src.i {
			t.Fatalf("%d chunks, %d flushes", src.i, out.flushes)
		}
		var ft frameTail
		src = &chunkReader{data: bytes.Clone(data), sizes: sizes}
		buf := make([]byte, 64)
		seen := 0
		for {
			n, err := src.Read(buf)
			ft.add(buf[:n])
			seen += n
			if got, want := ft.atBoundary(), referenceBoundary(data[:seen]); got != want {
				t.Fatalf("atBoundary after %q = %v, want %v", data[:seen], got, want)
			}
			if err != nil {
				break
			}
		}
	})
}

// BenchmarkRelay measures the SSE relay hot path: 1000 AG-UI frames of
// about 100 bytes, each its own read, written and flushed.
func BenchmarkRelay(b *testing.B) {
	frame := "data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"msg-1\",\"delta\":\"" + strings.Repeat("x", 40) + "\"}\n\n"
	data := []byte(strings.Repeat(frame, 1000))
	sizes := []byte{byte(len(frame) - 1)}
	buf := make([]byte, relayBufSize)
	for _, keepAlive := range []time.Duration{0, time.Hour} {
		name := "keepalive-off"
		if keepAlive > 0 {
			name = "keepalive-on"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			out := &bufFlusher{}
			for b.Loop() {
				out.Reset()
				relay(out, &chunkReader{data: data, sizes: sizes}, buf, encodingSSE, keepAlive, func() {})
			}
		})
	}
}

// blockingReader blocks until stop is called, like a runner that went
// silent at an event boundary, then fails like a cancelled request body.
type blockingReader struct{ stopped chan struct{} }

func (r blockingReader) Read([]byte) (int, error) {
	<-r.stopped
	return 0, context.Canceled
}

// failingFlusher fails every write, like a client whose socket stayed full
// past STREAM_WRITE_TIMEOUT.
type failingFlusher struct{}

var errClientStalled = errors.New("client stalled")

func (failingFlusher) Write([]byte) (int, error) { return 0, errClientStalled }
func (failingFlusher) Flush() error              { return errClientStalled }

// TestFailedKeepAliveEndsRelay: a keep-alive comment that cannot be written
// (the client stopped reading while the runner is silent) stops the runner
// call and ends the relay with the client's error, instead of leaving the
// relay blocked on a runner that says nothing.
func TestFailedKeepAliveEndsRelay(t *testing.T) {
	t.Parallel()
	src := blockingReader{stopped: make(chan struct{})}
	var once sync.Once
	stop := func() { once.Do(func() { close(src.stopped) }) }
	done := make(chan relayResult, 1)                                                                              // relay's result, read once
	go func() { done <- relay(failingFlusher{}, src, make([]byte, 64), encodingSSE, 10*time.Millisecond, stop) }() // ends when stop unblocks the read
	select {
	case res := <-done:
		if !errors.Is(res.ClientErr, errClientStalled) || res.UpstreamErr != nil || res.Pings != 0 {
			t.Fatalf("relay result %+v, want the client's error only", res)
		}
	case <-time.After(10 * time.Second):
		stop()
		t.Fatal("relay still blocked after its keep-alive failed")
	}
}
