#!/bin/sh
# Tollgate's added latency measured with tools the project did not write:
# nginx (Debian) as a fixed-answer OpenAI upstream and vegeta (Go module
# proxy, pinned) or wrk (Debian) as the open-loop load generator. The stack is
# the product as shipped: `tollgate gateway` (receipts on, the embedded
# write-ahead ledger, per-request logging as in production, the prover apart:
# --no-prover, as the README's gateway deployment) and `tollgate worker
# --engine openai` in front of nginx, as separate processes.
#
#   scripts/bench-independent.sh                     # rates 500 1000 2000 3000, 10 s each
#   RATES="2000" DURATION=30s scripts/bench-independent.sh
#   RECEIPTS=0 scripts/bench-independent.sh          # receipts off (diagnostic)
#   STREAM=1 scripts/bench-independent.sh            # SSE: nginx returns a fixed event stream
#
# For each rate it runs vegeta against nginx directly, then through Tollgate,
# and prints p50/p99/max and errors of both and Tollgate's added latency
# (through minus direct, percentile by percentile). Results and logs go to
# $DIR (default /tmp/tollgate-bench-independent): results.tsv, *.bin (vegeta
# results, `vegeta report` reads them), gateway.log, worker.log.
# Needs root or sudo for apt-get when nginx or wrk is missing.
set -eu
cd "$(dirname "$0")/.."
: "${RATES:=500 1000 2000 3000}" "${DURATION:=10s}" "${RECEIPTS:=1}" "${STREAM:=0}"
: "${DIR:=/tmp/tollgate-bench-independent}" "${VEGETA_VERSION:=v12.13.0}"
: "${NGINX_PORT:=18431}" "${GW_PORT:=18432}" "${WORKER_PORT:=18433}"
export GOEXPERIMENT="${GOEXPERIMENT:-simd}" CGO_CFLAGS="${CGO_CFLAGS:--O2 -Wno-deprecated-declarations}"

rm -rf "$DIR" && mkdir -p "$DIR/bin" "$DIR/nginx" "$DIR/gw" "$DIR/worker"

# --- tools the project did not write -------------------------------------
need_apt=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt="$need_apt nginx-light"
command -v wrk >/dev/null 2>&1 || need_apt="$need_apt wrk"
if [ -n "$need_apt" ]; then
	SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need_apt >"$DIR/apt.log" 2>&1 ||
		{ $SUDO apt-get update -q >>"$DIR/apt.log" 2>&1 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need_apt >>"$DIR/apt.log" 2>&1; } ||
		{ echo "bench-independent: apt-get install$need_apt failed (see $DIR/apt.log)" >&2; exit 1; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
VEGETA="$(go env GOPATH)/bin/vegeta"
if ! [ -x "$VEGETA" ] || ! go version -m "$VEGETA" 2>/dev/null | grep -q "vegeta/v12[[:space:]]*$VEGETA_VERSION"; then
	(cd "$DIR" && GOFLAGS= go install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION")
fi

go build -o "$DIR/bin/tollgate" ./cmd/tollgate
TG="$DIR/bin/tollgate"

# --- nginx: a fixed chat completion (or event stream) ----------------------
BODY='{"id":"chatcmpl-nginx","object":"chat.completion","created":1764547200,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28}}'
SSE=""
i=1
while [ $i -le 16 ]; do
	SSE="${SSE}data: {\"id\":\"chatcmpl-nginx\",\"object\":\"chat.completion.chunk\",\"created\":1764547200,\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w$i \"},\"finish_reason\":null}]}\n\n"
	i=$((i + 1))
done
SSE="${SSE}data: {\"id\":\"chatcmpl-nginx\",\"object\":\"chat.completion.chunk\",\"created\":1764547200,\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":16,\"total_tokens\":28}}\n\ndata: [DONE]\n\n"
if [ "$STREAM" = 1 ]; then ANSWER="default_type text/event-stream; return 200 \"$SSE\";"; else ANSWER="default_type application/json; return 200 '$BODY';"; fi
cat >"$DIR/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $DIR/nginx/nginx.pid;
error_log $DIR/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $DIR/nginx;
	keepalive_requests 1000000;
	server {
		listen 127.0.0.1:$NGINX_PORT;
		location = /v1/chat/completions { $ANSWER }
		location = /v1/models { default_type application/json; return 200 '{"object":"list","data":[{"id":"bench-model","object":"model","owned_by":"nginx"}]}'; }
		location / { return 404; }
	}
}
EOF

pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
"$NGINX" -c "$DIR/nginx/nginx.conf" -p "$DIR/nginx" &
pids="$pids $!"

# --- Tollgate: gateway and worker as separate processes ---------------------
API_KEY=sk-bench-independent
TOKEN=pt-bench-independent
ADMIN=ak-bench-independent
gwflags="--listen 127.0.0.1:$GW_PORT --data $DIR/gw --api-key $API_KEY --admin-key $ADMIN --provider-token $TOKEN --open-registration"
if [ "$RECEIPTS" = 1 ]; then gwflags="$gwflags --no-prover"; else gwflags="$gwflags --no-receipts"; fi
# shellcheck disable=SC2086
"$TG" gateway $gwflags >"$DIR/gateway.log" 2>&1 &
pids="$pids $!"
DIGEST=$(printf 'bench-model weights' | sha256sum | cut -d' ' -f1)
sleep 1
"$TG" worker --gateway "http://127.0.0.1:$GW_PORT" --provider-token "$TOKEN" --data "$DIR/worker" \
	--listen "127.0.0.1:$WORKER_PORT" --engine openai --upstream "http://127.0.0.1:$NGINX_PORT/v1" \
	--model-name bench-model --model-digest "$DIGEST" --max-concurrency 1024 >"$DIR/worker.log" 2>&1 &
pids="$pids $!"

i=0
until curl -fsS -H "Authorization: Bearer $API_KEY" "http://127.0.0.1:$GW_PORT/v1/models" 2>/dev/null | grep -q bench-model; do
	i=$((i + 1))
	[ $i -lt 300 ] || { echo "bench-independent: the worker did not register; logs in $DIR" >&2; tail -20 "$DIR/gateway.log" "$DIR/worker.log" >&2; exit 1; }
	sleep 0.1
done

# --- load ------------------------------------------------------------------
REQ='{"model":"bench-model","messages":[{"role":"user","content":"Say the numbers one to sixteen."}],"max_tokens":16}'
[ "$STREAM" = 1 ] && REQ='{"model":"bench-model","messages":[{"role":"user","content":"Say the numbers one to sixteen."}],"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}}'
printf '%s' "$REQ" >"$DIR/body.json"
target() {
	printf 'POST %s\nContent-Type: application/json\nAuthorization: Bearer %s\n@%s\n' "$1" "$API_KEY" "$DIR/body.json"
}
# ms from a vegeta JSON report: field (latencies.50th etc., ns) → ms
ms() { python3 -c "import json,sys; r=json.load(open('$1')); print('%.3f' % (r['latencies']['$2']/1e6))"; }
errs() { python3 -c "import json; r=json.load(open('$1')); print('%.2f' % (100*(1-r['success'])))"; }
warm() { target "$1" | "$VEGETA" attack -rate 200/s -duration 2s -timeout 5s >/dev/null; }

printf 'rate\tdirect_p50_ms\tdirect_p99_ms\tdirect_err_pct\ttollgate_p50_ms\ttollgate_p99_ms\ttollgate_max_ms\ttollgate_err_pct\tadded_p50_ms\tadded_p99_ms\n' >"$DIR/results.tsv"
warm "http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
warm "http://127.0.0.1:$GW_PORT/v1/chat/completions"
for rate in $RATES; do
	for side in direct tollgate; do
		url="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
		[ $side = tollgate ] && url="http://127.0.0.1:$GW_PORT/v1/chat/completions"
		target "$url" | "$VEGETA" attack -rate "$rate/s" -duration "$DURATION" -timeout 10s -max-workers 4096 >"$DIR/$side-$rate.bin"
		"$VEGETA" report -type json <"$DIR/$side-$rate.bin" >"$DIR/$side-$rate.json"
	done
	d="$DIR/direct-$rate.json" t="$DIR/tollgate-$rate.json"
	dp50=$(ms "$d" 50th) dp99=$(ms "$d" 99th) tp50=$(ms "$t" 50th) tp99=$(ms "$t" 99th) tmax=$(ms "$t" max)
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rate" "$dp50" "$dp99" "$(errs "$d")" "$tp50" "$tp99" "$tmax" "$(errs "$t")" \
		"$(python3 -c "print('%.3f' % ($tp50-$dp50))")" "$(python3 -c "print('%.3f' % ($tp99-$dp99))")" >>"$DIR/results.tsv"
done
column -t "$DIR/results.tsv"
echo "receipts=$RECEIPTS stream=$STREAM duration=$DURATION (vegeta $VEGETA_VERSION, nginx $("$NGINX" -v 2>&1 | sed 's/.*\///')); results in $DIR"
if [ "$RECEIPTS" = 1 ]; then
	curl -fsS -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:$GW_PORT/v1/receipts?limit=1" >/dev/null &&
		echo "receipts: the ledger answers (GET /v1/receipts)"
fi
