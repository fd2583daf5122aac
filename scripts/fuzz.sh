#!/usr/bin/env bash
# Runs every fuzz target of the module for a short time (default 15s each).
# The seed corpus lives in each package's testdata/fuzz/<Target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-15s}
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "== $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
	done
done
