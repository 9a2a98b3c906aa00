# Tollgate. `make run` starts the gateway with a local worker; `make test` runs every test.
GO       ?= go
BIN      ?= bin/tollgate
SHARED   ?= $(abspath ../shared)
export CGO_CFLAGS ?= -O2 -Wno-deprecated-declarations
export TOLLGATE_SHARED := $(SHARED)
# Go 1.26's experimental SIMD package gives the built-in llama engine its
# vector kernels (bit-identical to the scalar ones, which plain builds use).
export GOEXPERIMENT ?= simd

# Packages with real concurrency run under the race detector; the rest
# (the llama engine's numeric kernels, the zk prover) run without it to keep `make test`
# fast on small machines.
RACE_PKGS  := ./gateway/... ./scheduler/... ./batching/... ./workers ./workers/keys/... \
              ./workers/telemetry/... ./workers/engine/sim/... ./workers/engine/openai/... \
              ./receipts ./receipts/ledger/... ./internal/obs/... ./internal/ratelimit/... ./internal/cluster/... \
              ./internal/workerlink/... ./internal/h1/...
PLAIN_PKGS  = $(filter-out $(shell $(GO) list $(RACE_PKGS)),$(shell $(GO) list ./...))

.PHONY: build run test test-go test-race test-node test-evm test-gpu vet fmt bench bench-independent redis test-deps fuzz

build:
	$(GO) build -o $(BIN) ./cmd/tollgate

run: build
	$(BIN) dev

vet:
	$(GO) vet ./...

test: vet redis test-deps test-go test-race test-node test-evm

# Chromium (browser CORS and status-page screenshots) and iptables (the NAT
# test), installed when missing and possible; without them those tests skip.
test-deps:
	@sh scripts/test-deps.sh

# Redis-backed tests (the Redis ledger store, the shared rate limiter) use the
# Redis on 127.0.0.1:6379, starting or installing one when needed.
redis:
	@sh scripts/redis-up.sh || echo "redis: none reachable; Redis tests will skip"

test-go:
	$(GO) test -count=1 -timeout 10m $(PLAIN_PKGS)

test-race:
	$(GO) test -count=1 -race -timeout 10m $(RACE_PKGS)

# The client suite (test/node): openai@7, LangChain JS and the Vercel AI
# SDK, pinned exactly in test/node's package-lock.json (installed with npm ci
# when the lock changed), against two stacks the suite starts on free ports:
# `tollgate dev` on the built-in llama engine (stories260K) and a gateway +
# worker --engine openai in front of `tollgate mock-upstream`. Takes seconds
# once installed. ONLY=word[,word] runs the groups whose name contains one
# (e.g. make test-node ONLY=tools). NODE_TODO=feature[,feature] (see
# FEATURES in sdk_test.mjs) runs the tests that need one as todo, so they
# report without failing the target: for a branch that lacks a feature.
# Main has every feature, so it is empty and every test runs strictly.
NODE_TODO ?=
test-node: build
	@command -v node >/dev/null || { echo "test-node: node is required"; exit 1; }
	cd test/node && { cmp -s package-lock.json node_modules/.tollgate-lock || { npm ci --no-audit --no-fund && cp package-lock.json node_modules/.tollgate-lock; }; }
	cd test/node && TOLLGATE_NODE_ONLY=$(ONLY) TOLLGATE_NODE_TODO=$(NODE_TODO) node --test-reporter=spec sdk_test.mjs ../../$(BIN)

# The on-chain verifier: the Solidity `tollgate keys solidity` writes for a v2
# key, compiled with solc-js and run in an in-process EVM (@ethereumjs/vm),
# both pinned in test/evm/package.json, on a batch the fixture program
# proves with the cached capacity-8 development keys; prints gas.
test-evm:
	@command -v node >/dev/null || { echo "test-evm: node is required"; exit 1; }
	cd test/evm && { [ -d node_modules/solc ] || npm ci --no-audit --no-fund || npm install --no-audit --no-fund; }
	$(GO) run ./test/evm/fixture -out test/evm/fixture.json
	cd test/evm && node evm_test.mjs fixture.json

test-gpu:
	$(GO) run ./cmd/tollgate gpu -require -metrics

# Gateway overhead versus calling the simulator worker's agent directly.
bench:
	$(GO) test -run '^$$' -bench GatewayOverhead -benchtime 2000x ./cmd/tollgate/

# Tollgate's added latency through `tollgate gateway` + `tollgate worker
# --engine openai` (receipts on, prover apart) measured by tools the project
# did not write: vegeta against an nginx fixed-answer upstream; installs them
# when missing. RATES, DURATION, RECEIPTS=0, STREAM=1 (see the script).
bench-independent:
	sh scripts/bench-independent.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

# Every native fuzz target in the module (found by name, so new ones join
# automatically), FUZZTIME each; a crasher stops the run and is kept in the
# package's testdata/fuzz. FUZZ_PKGS narrows it (e.g. FUZZ_PKGS=./gateway/...).
# Each target ends with one "fuzz-summary:" line (its executions and new
# interesting inputs, from go test's last progress line); FUZZ_LOG collects
# them all. FUZZ_PARALLEL sets the fuzzing workers (default GOMAXPROCS).
# FUZZ_FROM=FuzzX skips the targets before FuzzX (resume a stopped run).
# A target that fails with a bare "context deadline exceeded" and writes no
# failing input is Go's fuzz-coordinator race at the end of -fuzztime
# (golang/go#75804, fixed in go1.27), not a finding: it is run again, up
# to three times, and its summary says retries=N.
FUZZTIME      ?= 10s
# Go minimizes each new interesting input for up to 60 s by default, and
# the executions it spends doing so are neither counted nor kept when
# -fuzztime runs out first: targets whose first new input was large sat at
# "0/sec" for the whole run (eight of them at stop 23). One second per
# input keeps minimizing useful without eating a 10 s budget.
FUZZMINTIME   ?= 1s
FUZZ_PKGS     ?= ./...
FUZZ_LOG      ?= fuzz-summary.txt
FUZZ_PARALLEL ?=
FUZZ_FROM     ?=
fuzz:
	@set -e; $(if $(FUZZ_FROM),,: > $(FUZZ_LOG);) out=$$(mktemp); trap 'rm -f $$out' EXIT; skip=$(if $(FUZZ_FROM),1,0); \
	for pkg in $$($(GO) list $(FUZZ_PKGS)); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
	    if [ $$skip -eq 1 ] && [ "$$t" != "$(FUZZ_FROM)" ]; then continue; fi; skip=0; \
	    echo "== $$pkg $$t"; tries=0; \
	    while :; do \
	      rc=0; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) $(if $(FUZZ_PARALLEL),-parallel $(FUZZ_PARALLEL)) $$pkg > $$out 2>&1 || rc=$$?; \
	      cat $$out; \
	      if [ $$rc -ne 0 ] && [ $$tries -lt 3 ] && grep -q 'context deadline exceeded' $$out && ! grep -q 'Failing input written to' $$out; then \
	        tries=$$((tries+1)); echo "fuzz: $$t: coordinator deadline race, no failing input: retry $$tries"; continue; \
	      fi; break; \
	    done; \
	    last=$$(grep -o 'elapsed: .*' $$out | tail -1); \
	    execs=$$(echo "$$last" | sed -n 's/.*execs: \([0-9]*\).*/\1/p'); \
	    newi=$$(echo "$$last" | sed -n 's/.*new interesting: \([0-9]*\).*/\1/p'); \
	    echo "fuzz-summary: $$t $$pkg execs=$${execs:-?} new_interesting=$${newi:-?} rc=$$rc retries=$$tries" | tee -a $(FUZZ_LOG); \
	    [ $$rc -eq 0 ]; \
	  done; \
	done
