#!/bin/sh
# Backlog soak (issue 15, finding 6): acknowledges N receipts (default
# 50,000) through real `tollgate` processes in the Redis mode (a gateway,
# a simulator worker, two provers), kills each of them with SIGTERM and
# kill -9 while the backlog is recorded and while it is proven, then waits
# until every receipt is proven and checks that none failed, every
# acknowledged receipt verifies and no request has two records.
#
#   scripts/soak-backlog.sh                # 50,000 receipts
#   N=2000 scripts/soak-backlog.sh         # a short run
#
# Needs Redis (scripts/redis-up.sh) and proving keys: KEYS=DIR (v2 keys,
# e.g. from `tollgate keys setup --dir DIR --capacity 8,64,256`), default
# the zk test key directory (capacity 8 set up if missing; the prover uses
# every capacity it finds, and 256 proves ~30x more receipts per second
# than 8). Proving 50,000 receipts takes hours on a 2-core machine.
# Results: $DIR/summary.json and $DIR/processes.log (DIR default
# /tmp/tollgate-soak).
set -eu
cd "$(dirname "$0")/.."
: "${N:=50000}" "${DIR:=/tmp/tollgate-soak}" "${CONCURRENCY:=64}" "${PROVE_TIMEOUT:=8h}" "${KILL_EVERY:=4m}"
export GOEXPERIMENT="${GOEXPERIMENT:-simd}"
sh scripts/redis-up.sh
rm -rf "$DIR" && mkdir -p "$DIR"
go build -o "$DIR/tollgate" ./cmd/tollgate
TOLLGATE_SOAK=1 TOLLGATE_SOAK_N="$N" TOLLGATE_SOAK_DIR="$DIR" TOLLGATE_BIN="$DIR/tollgate" \
TOLLGATE_SOAK_KEYS="${KEYS:-}" TOLLGATE_SOAK_CONCURRENCY="$CONCURRENCY" \
TOLLGATE_SOAK_PROVE_TIMEOUT="$PROVE_TIMEOUT" TOLLGATE_SOAK_KILL_EVERY="$KILL_EVERY" \
	go test -count=1 -timeout 0 -run TestSoakBacklog -v ./test/soak/
