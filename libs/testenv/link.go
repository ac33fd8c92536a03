package testenv

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// Link is a TCP relay on a loopback port in front of target whose traffic
// a test can cut and restore: a network partition of one client (connect
// the client to Addr), while the server and its other clients carry on.
type Link struct {
	t      testing.TB
	addr   string
	target string
	dialer net.Dialer

	mu    sync.Mutex
	ln    net.Listener // guarded by mu; nil while cut
	conns []net.Conn   // guarded by mu: both ends of every relayed connection
	wg    sync.WaitGroup
}

// NewLink starts relaying connections to Addr on to target; it is cut and
// its goroutines waited for in t.Cleanup.
func NewLink(t testing.TB, target string) *Link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("link listen: %v", err)
	}
	l := &Link{t: t, addr: ln.Addr().String(), target: target}
	l.serve(ln)
	t.Cleanup(func() {
		l.Cut()
		l.wg.Wait()
	})
	return l
}

// Addr is the relay's host:port: what the client under test dials.
func (l *Link) Addr() string { return l.addr }

// Cut closes every relayed connection and refuses new ones until Restore.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		// Closing ends the accept loop; its error says nothing new.
		_ = l.ln.Close()
		l.ln = nil
	}
	for _, c := range l.conns {
		_ = c.Close() // already closed by its peer, or not: either way gone
	}
	l.conns = nil
}

// Restore accepts connections on Addr again after Cut.
func (l *Link) Restore() {
	l.t.Helper()
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		l.t.Fatalf("link relisten on %s: %v", l.addr, err)
	}
	l.serve(ln)
}

func (l *Link) serve(ln net.Listener) {
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	l.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			u, err := l.dialer.DialContext(l.t.Context(), "tcp", l.target)
			if err != nil {
				_ = c.Close() // the client sees the refusal as a closed connection
				continue
			}
			l.mu.Lock()
			if l.ln != ln { // cut meanwhile
				l.mu.Unlock()
				_ = c.Close()
				_ = u.Close()
				return
			}
			l.conns = append(l.conns, c, u)
			l.mu.Unlock()
			l.wg.Go(func() { pipe(u, c) })
			l.wg.Go(func() { pipe(c, u) })
		}
	})
}

// pipe copies src to dst until either ends, then closes both so the other
// direction ends too.
func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src) // ends with the connection; its error is the cut
	_ = dst.Close()
	_ = src.Close()
}
