# Tollgate. `make run` starts the gateway with a local worker; `make test` runs every test.
GO       ?= go
BIN      ?= bin/tollgate
SHARED   ?= $(abspath ../shared)
export CGO_CFLAGS ?= -O2 -Wno-deprecated-declarations
export TOLLGATE_SHARED := $(SHARED)

.PHONY: build run test test-go test-node test-gpu vet fmt bench

build:
	$(GO) build -o $(BIN) ./cmd/tollgate

run: build
	$(BIN) dev

vet:
	$(GO) vet ./...

test: vet test-go test-node

test-go:
	$(GO) test -count=1 -timeout 15m ./...

test-node: build
	@echo "node SDK test: not yet wired"

test-gpu:
	@echo "test-gpu: not yet wired"

fmt:
	gofmt -w $$(git ls-files '*.go')
