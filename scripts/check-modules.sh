#!/usr/bin/env bash
# Checks that a built binary registers exactly the Caracal modules listed in
# testdata/modules.txt (the root package's test checks the Go registry against the same list).
set -euo pipefail
bin=${1:?usage: check-modules.sh <binary>}
cd "$(dirname "$0")/.."
got=$("$bin" list-modules | grep -E '(^|\.)caracal(_|$)' | sort)
want=$(sort testdata/modules.txt)
if [ "$got" != "$want" ]; then
	echo "module list of $bin differs from testdata/modules.txt:" >&2
	diff <(echo "$want") <(echo "$got") >&2 || true
	exit 1
fi
echo "$bin: $(echo "$got" | wc -l) Caracal modules registered"
