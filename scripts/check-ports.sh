#!/usr/bin/env bash
# check-ports.sh HOST:PORT... refuses to go on when something already accepts TCP
# connections on one of the addresses. Caddy listens with SO_REUSEPORT, so a second
# `make run` would otherwise start beside the first without a word, and the two would
# answer requests at random (with memory storage, each with its own zone keys).
set -euo pipefail

busy=0
for addr in "$@"; do
	host=${addr%:*} port=${addr##*:}
	if timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null; then
		printf 'caracal: %s is already in use (is a caracal from make run still running?)\n' "$addr" >&2
		busy=1
	fi
done
if ((busy)); then
	printf 'caracal: stop that process first (ss -ltnp shows which one listens), then try again.\n' >&2
	exit 1
fi
