// Command httpcheck is the health check of the distroless service images,
// which have no shell, curl or wget: it GETs one URL and exits 0 when the
// answer is 2xx, 1 otherwise. docker-compose healthchecks run it, e.g.
//
//	httpcheck http://127.0.0.1:9090/readyz
//
// With -bearer-env NAME it sends "Authorization: Bearer $NAME".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "httpcheck:", err)
		os.Exit(1)
	}
}

// errUsage is returned for bad arguments.
var errUsage = errors.New("usage: httpcheck [-timeout 3s] [-bearer-env NAME] URL")

// run checks the URL in args; getenv reads the bearer token variable.
func run(args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("httpcheck", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	timeout := fs.Duration("timeout", 3*time.Second, "whole request timeout")
	bearerEnv := fs.String("bearer-env", "", "environment variable holding a bearer token")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() != 1 {
		return errUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fs.Arg(0), nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if *bearerEnv != "" {
		req.Header.Set("Authorization", "Bearer "+getenv(*bearerEnv))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", fs.Arg(0), err)
	}
	defer resp.Body.Close() //nolint:errcheck // read-only body; nothing to report
	// Drain a little so the connection closes cleanly; the content is not needed.
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)); err != nil {
		return fmt.Errorf("read %s: %w", fs.Arg(0), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("get %s: status %d", fs.Arg(0), resp.StatusCode)
	}
	return nil
}
