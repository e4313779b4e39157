# vault-plugin-secrets-adobe-ims
SHELL        := /bin/bash
VERSION      ?= v0.1.0
PLUGIN       := vault-plugin-secrets-adobe-ims
MODULE       := github.com/ims-vault/vault-plugin-secrets-adobe-ims
LDFLAGS      := -s -w -X $(MODULE).Version=$(VERSION)
BIN          := $(CURDIR)/bin
GO_PACKAGES  := $(shell go list ./... | grep -v /e2e)
GOLANGCI_LINT := github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0

DIST         ?= $(CURDIR)/dist

.PHONY: all build emulator vault test unit e2e fmt lint demo demo-stop release bench clean

all: build

## build: the plugin binary, with its version injected, into bin/
build:
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/$(PLUGIN) ./cmd/$(PLUGIN)

## emulator: the IMS emulator (a test double of Adobe IMS) into bin/
emulator:
	go build -o $(BIN)/ims-emulator ./cmd/ims-emulator

## vault: build (once) and cache the Vault server used by e2e tests and the demo
vault:
	@./scripts/vault.sh >/dev/null

## test: unit tests with the race detector, each fuzz target briefly, then end-to-end tests in a real Vault
test: unit fuzz-short e2e

unit:
	go test -race -count=1 $(GO_PACKAGES)

# Counts of executions, not durations: with a duration, Go 1.26's fuzzing
# coordinator can fail a target with "context deadline exceeded" as the time
# runs out (golang/go#75804, fixed in Go 1.27), which would make CI flaky.
FUZZTIME       ?= 100000x
FUZZTIME_SHORT ?= 3000x
.PHONY: fuzz fuzz-short

## fuzz: run each Go fuzz target for FUZZTIME (one target per `go test -fuzz` run; see scripts/fuzz.sh)
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

## fuzz-short: each fuzz target for FUZZTIME_SHORT, beyond its seed corpus (which `unit` runs), as part of `make test`
fuzz-short:
	FUZZTIME=$(FUZZTIME_SHORT) ./scripts/fuzz.sh

e2e: vault
	VAULT_BINARY="$$(./scripts/vault.sh)" go test -count=1 -timeout 25m ./e2e/...

fmt:
	gofmt -w $$(git ls-files '*.go')

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "run make fmt"; exit 1; }
	go run $(GOLANGCI_LINT) run ./...

## demo: Vault + plugin + IMS emulator on loopback, mints a token; `make demo-stop` ends it
demo: build emulator vault
	@./scripts/demo.sh start

demo-stop:
	@./scripts/demo.sh stop

## release: static binaries for linux and darwin on amd64 and arm64, and SHA256SUMS, into dist/
release:
	./scripts/release.sh $(VERSION) $(DIST)

## mutate: mutation testing, not part of `make test` (slow): the mutations issue 15 listed, each
## caught by a named test, then gremlins over the root package and internal/ (see scripts/mutate.sh)
.PHONY: mutate
mutate:
	./scripts/mutate.sh $(MUTATE)

## bench: in-process Go benchmarks, then the load program against a real Vault (see BENCHMARKS.md)
bench: vault
	go test -run '^$$' -bench . -benchmem . ./internal/tokencache/
	VAULT_BINARY="$$(./scripts/vault.sh)" go run ./bench/loadbench

clean:
	rm -rf $(BIN) $(DIST)
