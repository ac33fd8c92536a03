package kubetest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// dialTimeout bounds one connection to the API server (on loopback).
const dialTimeout = 5 * time.Second

// Outage is a TCP forwarder in front of the API server that a test can take
// down and bring back: down, every open connection is closed and every new
// one is closed at once, so its clients see the API server go away (watches
// break, requests fail) while the API server and etcd keep their state, as
// in a control-plane outage. Its methods are safe for concurrent use.
type Outage struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool                  // guarded by mu
	conns map[net.Conn]struct{} // guarded by mu: open client and upstream connections
	wg    sync.WaitGroup        // the accept loop and the copies
}

// Behind returns cfg reaching the API server through a new Outage (the
// same user and TLS; the server certificate is checked against the API
// server's own host name). The forwarder stops at the end of the test.
func Behind(tb testing.TB, cfg *rest.Config) (*Outage, *rest.Config) {
	tb.Helper()
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Host == "" {
		tb.Fatalf("api server host %q: %v", cfg.Host, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	o := &Outage{ln: ln, target: u.Host, conns: map[net.Conn]struct{}{}}
	o.wg.Add(1)
	// Owned by the Outage: ends when the cleanup closes the listener.
	go o.accept()
	tb.Cleanup(func() {
		_ = ln.Close() // ends the accept loop; its error is expected
		o.Down()
		o.wg.Wait()
	})
	c := rest.CopyConfig(cfg)
	if c.TLSClientConfig.ServerName == "" {
		c.TLSClientConfig.ServerName = u.Hostname()
	}
	u.Host = ln.Addr().String()
	c.Host = u.String()
	return o, c
}

// Down starts the outage: open connections are closed, new ones refused.
func (o *Outage) Down() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.down = true
	for c := range o.conns {
		_ = c.Close() // the copies see the close and end
	}
	clear(o.conns)
}

// Up ends the outage: new connections reach the API server again.
func (o *Outage) Up() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.down = false
}

func (o *Outage) accept() {
	defer o.wg.Done()
	for {
		c, err := o.ln.Accept()
		if err != nil {
			return // listener closed
		}
		up, err := o.dial()
		if err != nil {
			_ = c.Close() // down, or the API server is gone: the client sees a closed connection
			continue
		}
		if !o.track(c, up) {
			_ = c.Close()
			_ = up.Close()
			continue
		}
		o.wg.Add(2)
		go o.copy(up, c)
		go o.copy(c, up)
	}
}

// dial connects to the API server unless the outage is on.
func (o *Outage) dial() (net.Conn, error) {
	o.mu.Lock()
	down := o.down
	o.mu.Unlock()
	if down {
		return nil, errors.New("outage")
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", o.target)
}

// track records a forwarded pair, unless the outage began meanwhile.
func (o *Outage) track(c, up net.Conn) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		return false
	}
	o.conns[c], o.conns[up] = struct{}{}, struct{}{}
	return true
}

// copy forwards one direction until either side closes, then closes both.
func (o *Outage) copy(dst, src net.Conn) {
	defer o.wg.Done()
	_, _ = io.Copy(dst, src) // ends on close; the error is the close itself
	_ = dst.Close()
	_ = src.Close()
	o.mu.Lock()
	delete(o.conns, dst)
	delete(o.conns, src)
	o.mu.Unlock()
}
