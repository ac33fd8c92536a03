package proxy

import (
	"errors"
	"io"
	"sync"
	"time"
)

// relayBufSize is the read size from the runner. A read returns as soon as
// any bytes arrive, so the size bounds a chunk, it never delays one.
const relayBufSize = 32 << 10

// buffers recycles relay buffers: a fresh 32 KiB buffer per request was
// most of the proxy's allocation per request. Safe for concurrent use.
type buffers struct{ pool sync.Pool }

func newBuffers() *buffers {
	return &buffers{pool: sync.Pool{New: func() any { return new([relayBufSize]byte) }}}
}

func (b *buffers) get() *[relayBufSize]byte  { return b.pool.Get().(*[relayBufSize]byte) }
func (b *buffers) put(p *[relayBufSize]byte) { b.pool.Put(p) }

// keepAliveComment is an SSE comment line; AG-UI clients ignore it.
var keepAliveComment = []byte(": ping\n\n")

// flushWriter is the client side of a relay: every chunk is written and then
// flushed at once.
type flushWriter interface {
	io.Writer
	Flush() error
}

// relayResult says how a relay ended.
type relayResult struct {
	// Bytes is the number of runner bytes written to the client (keep-alive
	// comments excluded).
	Bytes int64
	// Pings is the number of keep-alive comments written.
	Pings int
	// ClientErr is set when writing to the client failed.
	ClientErr error
	// UpstreamErr is set when reading from the runner failed (not io.EOF).
	UpstreamErr error
	// Encoding is the stream's encoding, as relay was told.
	Encoding streamEncoding
	// AtBoundary says whether the bytes written end between two frames of
	// Encoding (always false for encodingOther).
	AtBoundary bool
	// Terminal says whether the last event written was RUN_FINISHED or
	// RUN_ERROR.
	Terminal bool
}

// relay copies src to dst chunk by chunk, flushing after each, without
// changing the bytes. It follows the frames of enc as they pass (see
// eventFrames), and reports where the stream stopped. When keepAlive > 0
// and enc is SSE it writes an SSE comment after keepAlive without traffic,
// but only at an event boundary, so a comment never lands inside a frame
// the runner is still writing.
//
// The chunks are read and written on the caller's goroutine: a chunk costs
// one read and one write (with its flush), and the frame tracking, which
// allocates nothing. Keep-alives come from a timer that is not touched per
// chunk (see keepAliver). stop must make a blocked src.Read return (cancel
// the upstream request): a failed keep-alive write calls it, so the relay
// ends with the client error. buf is free for reuse when relay returns.
//
// With keep-alives, dst may hold the response headers unflushed: the
// first chunk carries them, in its write, or the timer flushes them as soon
// as it runs, whichever comes first (httputil.ReverseProxy flushes them
// the same way). A runner's first event usually follows its headers at
// once, and a separate write of the headers was one more system call per
// stream.
func relay(dst flushWriter, src io.Reader, buf []byte, enc streamEncoding, keepAlive time.Duration, stop func()) relayResult {
	var res relayResult
	var frames *eventFrames
	if !keepsAlive(enc, keepAlive) {
		frames = &eventFrames{enc: enc}
		res = copyChunks(src, buf, func(b []byte) error {
			if err := writeFlush(dst, b); err != nil {
				return err
			}
			frames.add(b)
			return nil
		})
	} else {
		ka := startKeepAlive(dst, keepAlive, stop)
		frames = &ka.frames // no longer touched by the timer once end returns
		res = copyChunks(src, buf, ka.write)
		pings, err := ka.end()
		res.Pings = pings
		if err != nil && res.ClientErr == nil {
			// The read failed because the failed keep-alive stopped it.
			res.ClientErr, res.UpstreamErr = err, nil
		}
	}
	res.Encoding, res.AtBoundary, res.Terminal = enc, frames.atBoundary(), frames.terminal()
	return res
}

// keepsAlive reports whether relay sends keep-alive comments on a stream
// (and the response headers with them, see relay).
func keepsAlive(enc streamEncoding, keepAlive time.Duration) bool {
	return keepAlive > 0 && enc == encodingSSE
}

// copyChunks reads src until it fails and passes each chunk to write.
func copyChunks(src io.Reader, buf []byte, write func([]byte) error) relayResult {
	var res relayResult
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if werr := write(buf[:n]); werr != nil {
				res.ClientErr = werr
				return res
			}
			res.Bytes += int64(n)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				res.UpstreamErr = err
			}
			return res
		}
	}
}

// keepAliver serialises the relay's writes with the keep-alive comments a
// timer writes while the relay is blocked reading the runner. The timer is
// not reset per chunk (that dominated the cost of busy streams): when it
// fires after traffic, it re-arms for the rest of the idle period. Safe for
// concurrent use.
type keepAliver struct {
	dst   flushWriter
	every time.Duration
	stop  func()
	timer *time.Timer // set before the timer is started, never changed

	mu        sync.Mutex
	frames    eventFrames // guarded by mu: the SSE stream's frames
	lastWrite time.Time   // guarded by mu
	flushed   bool        // guarded by mu: dst has been flushed (the response headers went out)
	pings     int         // guarded by mu
	err       error       // guarded by mu: the failed keep-alive write
	ended     bool        // guarded by mu: no more writes
}

// startKeepAlive starts the timer; its first run flushes the response
// headers unless the first chunk has (see relay).
func startKeepAlive(dst flushWriter, every time.Duration, stop func()) *keepAliver {
	k := &keepAliver{dst: dst, every: every, stop: stop, frames: eventFrames{enc: encodingSSE}, lastWrite: time.Now()}
	k.timer = time.AfterFunc(time.Hour, k.fire)
	k.timer.Reset(0) // after k.timer is set: fire reads it
	return k
}

// write relays one chunk.
func (k *keepAliver) write(b []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ended {
		return k.err
	}
	if err := writeFlush(k.dst, b); err != nil {
		return err
	}
	k.flushed = true
	k.frames.add(b)
	k.lastWrite = time.Now()
	return nil
}

// fire runs on the timer's goroutine.
func (k *keepAliver) fire() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ended {
		return
	}
	if !k.flushed {
		// Nothing relayed yet: the response headers go out now.
		k.flushed = true
		if err := k.dst.Flush(); err != nil {
			k.err, k.ended = err, true
			k.stop() // the relay is blocked reading; end it
			return
		}
	}
	now := time.Now()
	if idle := now.Sub(k.lastWrite); idle < k.every {
		k.timer.Reset(k.every - idle)
		return
	}
	// Mid-frame silence is left alone: a comment there would corrupt the
	// frame. The next idle period after the frame ends pings.
	if k.frames.atBoundary() {
		if err := writeFlush(k.dst, keepAliveComment); err != nil {
			k.err, k.ended = err, true
			k.stop() // the relay is blocked reading; end it
			return
		}
		k.pings++
		k.lastWrite = now
	}
	k.timer.Reset(k.every)
}

// end stops the keep-alives; once it returns, nothing writes to dst. It
// returns the pings written and the error of a failed one.
func (k *keepAliver) end() (int, error) {
	k.timer.Stop()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ended = true
	return k.pings, k.err
}

func writeFlush(dst flushWriter, b []byte) error {
	if _, err := dst.Write(b); err != nil {
		return err
	}
	return dst.Flush()
}

// frameTail remembers the last bytes written to tell whether the stream is
// between SSE events (after a blank line, in any of the SSE line endings).
type frameTail struct {
	buf [3]byte
	n   int
}

func (t *frameTail) add(b []byte) {
	if len(b) >= len(t.buf) {
		copy(t.buf[:], b[len(b)-len(t.buf):])
		t.n = len(t.buf)
		return
	}
	keep := min(t.n, len(t.buf)-len(b))
	copy(t.buf[:keep], t.buf[t.n-keep:t.n])
	copy(t.buf[keep:], b)
	t.n = keep + len(b)
}

func (t *frameTail) atBoundary() bool {
	return t.n == 0 || endsFrame(t.buf[:t.n]) // nothing written yet: between events
}

// endsFrame reports whether a stream whose last bytes are tail (three are
// enough) is between SSE events: it ends with two line ends in a row, a
// blank line. SSE ends a line with "\r\n", "\n" or "\r" (WHATWG HTML,
// "Parsing an event stream"), and a runner may mix them: "\n\n", "\r\r",
// "\r\n\r\n", but also "\n\r\n", "\r\n\n", "\r\r\n" and "\n\r". A stream
// ending in "\r" after a line end is between events whatever follows: a
// "\n" next only completes the blank line's "\r\n" (and a frame the proxy
// adds in between leaves that "\n" an empty line, which dispatches
// nothing).
func endsFrame(tail []byte) bool {
	n := len(tail)
	if n < 2 {
		return false
	}
	c, d := tail[n-2], tail[n-1]
	switch {
	case d == '\r':
		return c == '\n' || c == '\r'
	case d != '\n':
		return false
	case c == '\n':
		return true
	case c != '\r':
		return false
	}
	// The stream ends with "\r\n", one line end; a blank line needs one
	// more right before it.
	return n >= 3 && (tail[n-3] == '\n' || tail[n-3] == '\r')
}
