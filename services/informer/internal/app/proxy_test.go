package app_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// proxy is a TCP proxy in front of one address that the test can cut (close
// the listener and every connection, refuse new ones) and heal (listen on
// the same address again): a network partition of one client.
type proxy struct {
	t      *testing.T
	target string
	addr   string
	wg     sync.WaitGroup
	mu     sync.Mutex
	ln     net.Listener        // guarded by mu; nil while cut
	conns  map[net.Conn]string // guarded by mu
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p := &proxy{t: t, target: target, conns: map[net.Conn]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	// Owned by the proxy: ends when cut closes ln; Cleanup waits.
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close() // refused upstream: the client retries
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = "", ""
			p.mu.Unlock()
			for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
				p.wg.Add(1)
				// Owned by the proxy: ends when either side closes.
				go func() {
					defer p.wg.Done()
					_, _ = io.Copy(pair[1], pair[0]) // ends with the connection
					_ = pair[1].Close()              // so the other direction ends too
				}()
			}
		}
	}()
}

// cut closes the listener and every proxied connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close() // only ends the accept loop
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close() // ends the copies
		delete(p.conns, c)
	}
}

// heal listens on the proxy's address again.
func (p *proxy) heal() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(errors.Join(errors.New("listen again"), err))
	}
	p.serve(ln)
}
