# Caracal: one custom Caddy build. The README documents every target.
SHELL := /bin/bash
GO ?= go
# scripts/node-runtime/node_modules/.bin holds Node.js 20 where services.sh had to
# install it (the system's node was older); it is empty otherwise.
NODE_RUNTIME_BIN = $(CURDIR)/scripts/node-runtime/node_modules/.bin
export PATH := $(NODE_RUNTIME_BIN):/usr/local/go/bin:$(PATH)

MANIFEST = $(GO) run ./scripts/manifest
OUTPUT = $(shell $(MANIFEST) output)
BUILD_FLAGS = $(shell $(MANIFEST) build-flags)
# Caracal's version (xcaddy.json) and git commit, shown by `caracal version`.
LDFLAGS = $(shell $(MANIFEST) ldflags)
XCADDY_VERSION = v0.4.5
# The Node client libraries that e2e's interop tests drive.
NODE_CLIENTS = e2e/testdata/node

.PHONY: build xcaddy run run-postgres demo-ports test bench loadtest fuzz services check-modules fmt-check node-clients

## build: go build of cmd/caracal with the manifest's flags (works offline from a warm module cache)
build:
	$(GO) build $(BUILD_FLAGS) -ldflags '$(LDFLAGS)' -o $(OUTPUT) ./cmd/caracal

## xcaddy: the same build through xcaddy, as a third party would make it
xcaddy:
	$(GO) run github.com/caddyserver/xcaddy/cmd/xcaddy@$(XCADDY_VERSION) build $(shell $(MANIFEST) xcaddy-args)
	./scripts/check-modules.sh $(OUTPUT)-xcaddy

## run: build, then run Caddyfile.example with embedded defaults (no external services);
## refuses to start while another instance holds the demo's ports
run: demo-ports build
	$(OUTPUT) run --config Caddyfile.example --adapter caddyfile

## run-postgres: build, then run examples/postgres-redis/Caddyfile (creates the database
## when missing, generates development secrets into .caracal-dev/); scripts/run-postgres.sh
run-postgres: demo-ports build
	CARACAL_BIN=$(OUTPUT) ./scripts/run-postgres.sh

# demo-ports: refuse, before building, when the demo's addresses are taken (a second
# instance would share them silently through SO_REUSEPORT)
demo-ports:
	@./scripts/check-ports.sh 127.0.0.1:8443 127.0.0.1:8081

## services: start PostgreSQL and Redis if they are not reachable (Debian packages)
services:
	./scripts/services.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

check-modules: build
	./scripts/check-modules.sh $(OUTPUT)

## node-clients: install the interop suite's pinned npm packages (package-lock.json)
node-clients:
	cd $(NODE_CLIENTS) && npm ci --no-audit --no-fund

## test: gofmt, go vet, module list of the build, the whole suite with the race detector
test: services fmt-check check-modules node-clients
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 45m ./...

## bench: the load report, then the benchmark suite (figures in the README come from here)
bench: loadtest
	$(GO) test -run '^$$' -bench . -skip '^BenchmarkLoadReport$$' -benchmem -count 1 -timeout 30m ./...

## loadtest: the real binary under load in one interleaved run (plain reverse_proxy vs
## caracal_mandate, an MCP tools/call with and without the mcp block, token exchanges on
## memory and PostgreSQL, a 1 GiB stream); prints
## markdown tables and writes them to $(LOADTEST_REPORT)
LOADTEST_REPORT ?= loadtest-report.md
loadtest: services
	LOADTEST_REPORT=$(abspath $(LOADTEST_REPORT)) $(GO) test ./e2e -run '^$$' -bench '^BenchmarkLoadReport$$' -benchtime 1x -count 1 -timeout 30m

## fuzz: a short smoke run of every fuzz target
fuzz:
	./scripts/fuzz.sh 15s
