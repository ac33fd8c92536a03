// Command memapi runs the in-memory ambient API (gRPC and REST) for the dev
// stack. Flags default to the environment: MEMAPI_GRPC_ADDR, MEMAPI_REST_ADDR,
// AMBIENT_API_TOKEN or the file AMBIENT_API_TOKEN_FILE (one is required),
// MEMAPI_USERS_FILE (the multi-user mode),
// MEMAPI_FAULTS_ADDR (fault injection for the chaos suite, off by default),
// LOG_LEVEL; the standard OTEL_* variables export its spans.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/telemetry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "memapi:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg memapi.Config
	var level slog.Level
	flag.StringVar(&cfg.GRPCAddr, "grpc-addr", envOr("MEMAPI_GRPC_ADDR", "127.0.0.1:8001"), "gRPC listen address")
	flag.StringVar(&cfg.RESTAddr, "rest-addr", envOr("MEMAPI_REST_ADDR", "127.0.0.1:8000"), "REST listen address")
	flag.StringVar(&cfg.Token, "token", os.Getenv("AMBIENT_API_TOKEN"), "bearer token every call must carry")
	tokenFile := flag.String("token-file", os.Getenv("AMBIENT_API_TOKEN_FILE"), "file holding the token, instead of -token (a compose secret); read at start")
	usersFile := flag.String("users-file", os.Getenv("MEMAPI_USERS_FILE"), "JSON users file: per-user tokens narrowed to their projects over REST")
	flag.StringVar(&cfg.FaultsAddr, "faults-addr", envOr("MEMAPI_FAULTS_ADDR", ""), "serve fault injection (POST /faults/end-watches, /faults/outage?for=60s, /faults/outage/end; no token) on this address; empty: off. Test systems only")
	if err := level.UnmarshalText([]byte(envOr("LOG_LEVEL", "info"))); err != nil {
		return fmt.Errorf("LOG_LEVEL: want debug, info, warn or error: %w", err)
	}
	flag.Parse()
	if *tokenFile != "" {
		// The services' clients read the same file (compose mounts one
		// secret into all of them), so both sides hold the same token.
		if cfg.Token != "" {
			return errors.New("set one of AMBIENT_API_TOKEN (-token) and AMBIENT_API_TOKEN_FILE (-token-file)")
		}
		tok, err := envconfig.ReadSecretFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("AMBIENT_API_TOKEN_FILE: %w", err)
		}
		cfg.Token = tok.Reveal()
	}
	if cfg.Token == "" {
		return errors.New("no token: set AMBIENT_API_TOKEN, AMBIENT_API_TOKEN_FILE, -token or -token-file")
	}
	if *usersFile != "" {
		users, err := memapi.LoadUsers(*usersFile)
		if err != nil {
			return fmt.Errorf("MEMAPI_USERS_FILE: %w", err)
		}
		cfg.Users = users
	}
	// The standard OTEL_* variables: with an endpoint set, every call's
	// server span goes to the collector, joined to its caller's trace.
	l := envconfig.New(nil)
	export := telemetry.LoadEnv(l)
	if err := l.Err(); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, flush, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "memapi", Export: export, Logger: log})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	err = memapi.Run(ctx, cfg, log)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// Logged, not returned, as the services do (libs/service): a collector
	// gone before the API loses telemetry, not data, and a clean stop must
	// not exit 1.
	if ferr := flush(fctx); ferr != nil {
		log.Error("telemetry flush failed", slog.Any(logkey.Err, ferr))
	}
	return err
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}
