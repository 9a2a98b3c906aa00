#!/bin/sh
# Installs, best effort and bounded, the system tools some tests need and
# skip without (each says so when it skips): headless Chromium for the
# browser (CORS) and status-page screenshot tests, iptables for the NAT test
# (test/netns). Only as root with apt-get; elsewhere it says what is missing.
# `make test` runs it first, so a fresh machine needs nothing by hand.
set -u
missing=""
# The tests take any of these names for Chromium.
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ||
	command -v google-chrome >/dev/null 2>&1 || missing="$missing chromium"
command -v iptables >/dev/null 2>&1 || missing="$missing iptables"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "test-deps: not installed:$missing (needs root and apt-get); the tests that need them will skip" >&2
	exit 0
fi
# A failed attempt (no network, say) is not retried for a day: each would
# cost minutes of every make test.
marker="${TMPDIR:-/tmp}/tollgate-test-deps.failed"
if [ -n "$(find "$marker" -mmin -1440 2>/dev/null)" ]; then
	echo "test-deps: not installed:$missing (an attempt failed in the last day; remove $marker to retry); the tests that need them will skip" >&2
	exit 0
fi
echo "test-deps: installing$missing" >&2
if ! DEBIAN_FRONTEND=noninteractive timeout 600 sh -c "apt-get install -y -qq $missing || { apt-get update -qq && apt-get install -y -qq $missing; }" >/dev/null 2>&1; then
	echo "test-deps: could not install$missing; the tests that need them will skip" >&2
	touch "$marker" 2>/dev/null
fi
exit 0
