package proxy

import (
	"bytes"
	"context"
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
}

// relay copies src to dst chunk by chunk, flushing after each, without
// looking into or changing the bytes. When keepAlive > 0 it writes an SSE
// comment after keepAlive without traffic, but only at an event boundary,
// so a comment never lands inside a frame the runner is still writing.
//
// stop must make a blocked src.Read return (cancel the upstream request); it
// is called before relay returns so the reader goroutine can be waited for.
// buf is free for reuse when relay returns.
func relay(ctx context.Context, dst flushWriter, src io.Reader, buf []byte, keepAlive time.Duration, stop func()) relayResult {
	if keepAlive <= 0 {
		return relayDirect(dst, src, buf)
	}
	return relayKeepAlive(ctx, dst, src, buf, keepAlive, stop)
}

func relayDirect(dst flushWriter, src io.Reader, buf []byte) relayResult {
	var res relayResult
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if werr := writeFlush(dst, buf[:n]); werr != nil {
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

type readResult struct {
	n   int
	err error
}

func relayKeepAlive(ctx context.Context, dst flushWriter, src io.Reader, buf []byte, keepAlive time.Duration, stop func()) relayResult {
	var res relayResult
	reads := make(chan readResult) // unbuffered: buf is reused only after the writer took the chunk
	next := make(chan struct{})    // unbuffered: the writer hands buf back
	done := make(chan struct{})
	// Owned by relayKeepAlive: exits when a read fails (stop cancels the
	// upstream request) or done is closed; waited for below.
	go func() {
		defer close(reads)
		for {
			n, err := src.Read(buf)
			select {
			case reads <- readResult{n: n, err: err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
			select {
			case <-next:
			case <-done:
				return
			}
		}
	}()
	defer func() {
		close(done)
		stop()
		for range reads {
		}
	}()

	var tail frameTail
	// The timer is not reset per chunk (that dominated the cost of busy
	// streams); when it fires, it re-arms for the rest of the idle period.
	lastWrite := time.Now()
	timer := time.NewTimer(keepAlive)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			res.UpstreamErr = context.Cause(ctx)
			return res
		case now := <-timer.C:
			if idle := now.Sub(lastWrite); idle < keepAlive {
				timer.Reset(keepAlive - idle)
				continue
			}
			// Mid-frame silence is left alone: a comment there would corrupt
			// the frame. The next idle period after the frame ends pings.
			if tail.atBoundary() {
				if err := writeFlush(dst, keepAliveComment); err != nil {
					res.ClientErr = err
					return res
				}
				res.Pings++
				lastWrite = now
			}
			timer.Reset(keepAlive)
		case rr := <-reads:
			if rr.n > 0 {
				if err := writeFlush(dst, buf[:rr.n]); err != nil {
					res.ClientErr = err
					return res
				}
				res.Bytes += int64(rr.n)
				tail.add(buf[:rr.n])
				lastWrite = time.Now()
			}
			if rr.err != nil {
				if !errors.Is(rr.err, io.EOF) {
					res.UpstreamErr = rr.err
				}
				return res
			}
			next <- struct{}{}
		}
	}
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
	buf [4]byte
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
	if t.n == 0 {
		return true // nothing written yet
	}
	s := t.buf[:t.n]
	return bytes.HasSuffix(s, []byte("\n\n")) || bytes.HasSuffix(s, []byte("\r\r")) ||
		bytes.HasSuffix(s, []byte("\r\n\r\n"))
}
