# Ambient control plane. `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT       := $(abspath .)
BIN        := $(ROOT)/bin
MODPREFIX  := github.com/ambient-code/control-plane
# Every module of the workspace, e.g. ./libs ./proto ./services/informer.
MODULES    := $(shell go work edit -json | sed -n 's/.*"DiskPath": "\(.*\)".*/\1/p')
PKGS       := $(addsuffix /...,$(MODULES))
# Modules kept out of go.work on purpose (Helm, compose-go and BuildKit would
# move the versions the services build with); tested with GOWORK=off.
DEPLOY_MODULES := deploy/deploytest deploy/httpcheck

# Pinned code generators: `make proto` fetches exactly these.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GOLANGCI_LINT_VERSION      := v2.15.0

GOTEST_FLAGS ?= -race -count=1 -timeout 40m
# go vet and golangci-lint compile every package they check, test files
# included. With the build flags of the tests (-race) they compile exactly
# what `go test -race` then finds in the build cache, instead of a second,
# uninstrumented copy of every package: measured on a cold cache (2 cores),
# the uninstrumented `go vet` took 476 s and the race build of the tests 635 s.
VET_FLAGS    ?= -race
# An execution count, not a duration: duration-based -fuzztime races the
# fuzz coordinator's deadline in Go 1.26 (golang/go#75804) and fails with a
# bare "context deadline exceeded" on a loaded machine.
FUZZTIME     ?= 5000x
BENCHTIME    ?= 1x

export KUBEBUILDER_ASSETS := $(BIN)/k8s

# golangci-lint is installed, not `go run`: it must run with VET_FLAGS in
# GOFLAGS (its package loader calls `go list -export`) without being built
# with them itself.
GOLANGCI_LINT := $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
LINT_RUN      := GOFLAGS="$${GOFLAGS:-} $(VET_FLAGS)" $(GOLANGCI_LINT) run --allow-parallel-runners --config $(ROOT)/.golangci.yml ./...

.PHONY: help
help: ## Show this help.
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build every binary into bin/.
	@mkdir -p $(BIN)
	cd libs && go build -o $(BIN)/ ./cmd/...
	@for m in services/*; do (cd $$m && go build -o $(BIN)/ ./cmd/...) || exit 1; done

.PHONY: kube-binaries
kube-binaries: ## Build kube-apiserver and etcd from Go modules into bin/k8s (cached).
	hack/build-kube-binaries.sh

# The official AG-UI runner and client (npm: @ag-ui/encoder, @ag-ui/client)
# that agui-proxy's conformance tests run as Node processes
# (services/agui-proxy/internal/app/official_test.go). npm ci installs
# exactly package-lock.json; install scripts are refused (none of the locked
# packages has one), so installing runs no package's code. The stamp is the
# lock file npm writes into node_modules last: the install is redone only
# when package.json or package-lock.json is newer.
AGUI_PEERS := services/agui-proxy/testdata/agui-peers

.PHONY: agui-peers
agui-peers: $(AGUI_PEERS)/node_modules/.package-lock.json ## Install agui-proxy's official AG-UI test peers (npm ci of the pinned @ag-ui packages; needs node and npm).

$(AGUI_PEERS)/node_modules/.package-lock.json: $(AGUI_PEERS)/package.json $(AGUI_PEERS)/package-lock.json
	cd $(AGUI_PEERS) && npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

# make test runs the workspace's tests and the deploy modules' side by side:
# the workspace's packages mostly wait (timers, leases, API servers: its
# seven longest used 0.3-0.6 of a core each), deploy/deploytest mostly
# computes (Helm renders: 1.6-1.9 cores for its 3-4 minutes). One after the
# other, the seven and the deploy modules took 675 and 760 s (678 and 689
# CPU seconds); side by side 647 and 539 s (837 and 685 CPU seconds), on 2
# cores shared with other work.
# --output-sync prints each one's output whole when it ends, so the two
# never interleave; --keep-going runs both whatever the other's result,
# and make fails when either does.
.PHONY: test
test: kube-binaries agui-peers ## Run go vet and every test with -race: the workspace and, beside it, the deploy modules.
	go vet $(VET_FLAGS) $(PKGS)
	@echo "make test: test-workspace and test-deploy run side by side; each one's output follows when it ends"
	@$(MAKE) --no-print-directory -j2 --output-sync=target --keep-going test-workspace test-deploy

.PHONY: test-workspace
test-workspace: ## go test -race over every module of the workspace (make test runs it beside test-deploy).
	go test $(GOTEST_FLAGS) $(PKGS)

.PHONY: test-deploy
test-deploy: kube-binaries ## Test the chart, compose file and Dockerfile (deploy/deploytest, deploy/httpcheck).
	@for m in $(DEPLOY_MODULES); do \
	  echo "test $$m"; (cd $$m && GOWORK=off go vet $(VET_FLAGS) ./... && GOWORK=off go test $(GOTEST_FLAGS) ./...) || exit 1; \
	done

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME executions (default 5000x).
	@# Targets are found by their declaration, not with `go test -list`,
	@# which would build every package's test binary just to list none.
	@for f in $$(grep -rl --include='*_test.go' '^func Fuzz' $(MODULES) | sort); do \
	  d=$$(dirname $$f); \
	  for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
	    echo "fuzz $$d $$t"; (cd $$d && go test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) .) || exit 1; \
	  done; \
	done

.PHONY: bench
bench: kube-binaries ## Run the benchmarks (BENCHTIME=1x by default; figures go to docs/benchmarks.md), then print issue 15's targets from them.
	go test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -timeout 60m $(PKGS) | tee $(BIN)/bench.txt
	cd libs && go run ./cmd/benchsummary $(BIN)/bench.txt

.PHONY: lint
lint: $(GOLANGCI_LINT) ## gofmt, go vet and golangci-lint over every module.
	@test -z "$$(gofmt -l $(MODULES) $(DEPLOY_MODULES))" || { gofmt -l $(MODULES) $(DEPLOY_MODULES); echo "gofmt: files above need formatting"; exit 1; }
	go vet $(VET_FLAGS) $(PKGS)
	@for m in $(MODULES); do echo "golangci-lint $$m"; (cd $$m && $(LINT_RUN)) || exit 1; done
	@for m in $(DEPLOY_MODULES); do echo "go vet, golangci-lint $$m"; (cd $$m && GOWORK=off go vet $(VET_FLAGS) ./... && GOWORK=off $(LINT_RUN)) || exit 1; done

$(GOLANGCI_LINT):
	@mkdir -p $(BIN)/.golangci-lint
	GOBIN=$(BIN)/.golangci-lint GOFLAGS= go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(BIN)/.golangci-lint/golangci-lint $@

.PHONY: fmt
fmt: ## Format every Go file.
	gofmt -w $(MODULES)

.PHONY: tidy
tidy: ## go mod tidy in every module.
	@for m in $(MODULES) hack/kube-tools; do (cd $$m && go mod tidy); done

.PHONY: proto-tools
proto-tools:
	@mkdir -p $(BIN)
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

.PHONY: proto
proto: proto-tools ## Lint the protos and regenerate the Go code (committed), then record its digest in proto/generated.sum.
	cd proto && go run github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION) lint
	cd proto && go run github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION) generate
	hack/proto-sum.sh > proto/generated.sum

# The digest check first: when the protos, the generated code and the pins
# are exactly what `make proto` last left (proto/generated.sum), linting and
# regenerating would give the same result, so buf is not built (see
# hack/proto-sum.sh). Otherwise: regenerate and compare.
.PHONY: proto-check
proto-check: ## Fail when the committed generated code (or proto/generated.sum) is stale.
	@if [ "$$(hack/proto-sum.sh)" = "$$(cat proto/generated.sum 2>/dev/null)" ]; then \
	  echo "proto-check: protos, generated code and pins match proto/generated.sum (written by make proto)"; \
	else \
	  $(MAKE) proto && \
	  { git diff --exit-code -- proto || { echo "generated code in proto/ (or proto/generated.sum) is stale: run make proto and commit"; exit 1; }; } && \
	  { test -z "$$(git status --porcelain -- proto)" || { git status --porcelain -- proto; echo "make proto created untracked files"; exit 1; }; }; \
	fi

.PHONY: run
run: build ## Run the whole system locally (embedded NATS, in-memory API, every service).
	$(BIN)/devstack --bin-dir $(BIN) $(ARGS)

# The chaos suite (issue 14, services/devstack/cmd/chaos): CHAOS_CHANGES
# changes, every fault, the report in docs/reliability.md. Exit 1: an audit
# check failed; exit 2: the harness could not run. CHAOS_ARGS adds flags
# (bin/chaos -h), e.g. CHAOS_ARGS="--seed 42 --keep".
CHAOS_CHANGES ?= 2000
CHAOS_ARGS    ?=
CHAOS_COMMIT  := $(shell git describe --always --dirty 2>/dev/null)

.PHONY: nats-server
nats-server: ## Build nats-server (the version in libs' module graph) into bin/, for the chaos suite.
	@mkdir -p $(BIN)
	cd libs && go build -o $(BIN)/nats-server github.com/nats-io/nats-server/v2

.PHONY: chaos
chaos: build nats-server kube-binaries ## Run the chaos suite: CHAOS_CHANGES changes (2000) and every fault; report in docs/reliability.md.
	$(BIN)/chaos --bin-dir $(BIN) --kube-bin-dir $(BIN)/k8s --changes $(CHAOS_CHANGES) --commit "$(CHAOS_COMMIT)" $(CHAOS_ARGS)

.PHONY: chaos-short
chaos-short: build nats-server kube-binaries ## The short chaos suite for CI: 300 changes, one fault of each kind, a few minutes.
	$(BIN)/chaos --short --bin-dir $(BIN) --kube-bin-dir $(BIN)/k8s --commit "$(CHAOS_COMMIT)" --report "" $(CHAOS_ARGS)

-include deploy/images.mk
