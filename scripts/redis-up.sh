#!/bin/sh
# Make sure a Redis answers on 127.0.0.1:6379 (or REDIS_PORT) for the tests:
# nothing to do if one already does; otherwise start `redis-server
# --daemonize yes` with persistence off, installing it with apt-get first
# when it is missing and we run as root (CI). Exits non-zero only if no
# Redis could be made reachable; tests then skip their Redis cases.
set -eu
port="${REDIS_PORT:-6379}"

up() { redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; }

if command -v redis-cli >/dev/null 2>&1 && up; then
	exit 0
fi

if ! command -v redis-server >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "redis-up: installing redis-server" >&2
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
	else
		echo "redis-up: redis-server not installed and cannot install it (not root or no apt-get); Redis tests will skip" >&2
		exit 1
	fi
fi

dir="${TMPDIR:-/tmp}/tollgate-redis-$port"
mkdir -p "$dir"
echo "redis-up: starting redis-server on 127.0.0.1:$port (data in $dir, no persistence)" >&2
redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$dir" \
	--save "" --appendonly no --logfile "$dir/redis.log" --pidfile "$dir/redis.pid"

i=0
while ! up; do
	i=$((i + 1))
	if [ "$i" -gt 50 ]; then
		echo "redis-up: redis-server did not answer on port $port; see $dir/redis.log" >&2
		exit 1
	fi
	sleep 0.1
done
