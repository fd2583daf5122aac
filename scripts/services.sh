#!/usr/bin/env bash
# Starts the PostgreSQL and Redis servers that Caracal's integration tests use, on
# 127.0.0.1:5432 (user postgres, no password) and 127.0.0.1:6379, and installs the
# tools the e2e tests run (curl, jq, node, npm). What is missing comes from Debian
# packages; PostgreSQL lets local TCP connections in as postgres without a password
# (trust: this is for test machines only); what is down is started, and the script
# waits until both servers answer. When everything is there it does nothing.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
WAIT_SECONDS=60
HBA_MARKER="# caracal: trust local TCP connections (test machine)"

log() { printf 'services: %s\n' "$*"; }
die() { printf 'services: %s\n' "$*" >&2; exit 1; }

# tcp_open HOST PORT succeeds when something accepts a TCP connection there.
tcp_open() {
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# redis_answers succeeds when Redis replies to PING (an open port is not enough: the
# server may still be loading).
redis_answers() {
	timeout 2 bash -c '
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "PING\r\n" >&3
		IFS= read -r reply <&3 || exit 1
		[[ $reply == +PONG* ]]
	' _ "$REDIS_HOST" "$REDIS_PORT" 2>/dev/null
}

pg_up() { tcp_open "$PG_HOST" "$PG_PORT"; }


# as_root runs a command as root, through sudo when this shell is not root.
as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

apt_updated=false
apt_install() {
	command -v apt-get >/dev/null || die "apt-get not found: install $* yourself, or point CARACAL_TEST_DATABASE_URL / CARACAL_TEST_REDIS_URL at running servers"
	if ! $apt_updated; then
		log "apt-get update"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update
		apt_updated=true
	fi
	log "installing $*"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# The fault tests start private redis-server processes of their own (on other ports),
# so the binary must be installed even when a Redis server already answers.
if ! command -v redis-server >/dev/null; then
	apt_install redis-server
fi

# The README's walkthrough, and the e2e test that runs it, need curl and jq; the e2e
# interop tests run Node client libraries (node, and npm to install them).
declare -A tool_package=([curl]=curl [jq]=jq [node]=nodejs [npm]=npm)
missing_packages=()
for tool in curl jq node npm; do
	command -v "$tool" >/dev/null || missing_packages+=("${tool_package[$tool]}")
done
if ((${#missing_packages[@]} > 0)); then
	apt_install "${missing_packages[@]}"
fi
# The pinned client libraries need Node.js 20 or newer. Where the node on PATH is older
# (Debian 12's nodejs is 18), npm installs the official Node.js 20 build from the npm
# registry, pinned with its checksum in scripts/node-runtime/package-lock.json; the
# Makefile and the e2e tests put its scripts/node-runtime/node_modules/.bin first on PATH.
NODE_MIN_MAJOR=20
node_major() { "$1" -p 'process.versions.node.split(".")[0]'; }
runtime_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/node-runtime"
runtime_node="$runtime_dir/node_modules/.bin/node"
runtime_ok() { [[ -x $runtime_node ]] && (($(node_major "$runtime_node") >= NODE_MIN_MAJOR)); }
if (($(node_major node) < NODE_MIN_MAJOR)) && ! runtime_ok; then
	log "node $(node --version) is older than $NODE_MIN_MAJOR: installing Node.js $NODE_MIN_MAJOR from the npm registry into $runtime_dir"
	(cd "$runtime_dir" && npm ci --no-audit --no-fund)
	runtime_ok || die "no Node.js $NODE_MIN_MAJOR build for $(uname -m) in $runtime_dir: install Node.js $NODE_MIN_MAJOR or newer yourself (Debian 13's nodejs, or NodeSource's packages)"
fi

if pg_up && redis_answers; then
	log "PostgreSQL ($PG_HOST:$PG_PORT) and Redis ($REDIS_HOST:$REDIS_PORT) already answer; nothing to do."
	exit 0
fi

# pg_version prints the major version of the newest installed PostgreSQL cluster
# configuration, or nothing.
pg_version() {
	[[ -d /etc/postgresql ]] || return 0
	local dir
	dir=$(find /etc/postgresql -mindepth 2 -maxdepth 2 -type d -name main | sort -V | tail -n 1)
	if [[ -n $dir ]]; then
		basename "$(dirname "$dir")"
	fi
}

# trust_local_tcp puts trust rules for 127.0.0.1 and ::1 before every other rule of
# pg_hba.conf, since the first matching rule wins.
trust_local_tcp() {
	local hba=$1
	log "allowing local TCP connections without password in $hba"
	local tmp
	tmp=$(mktemp)
	{
		printf '%s\n' "$HBA_MARKER"
		printf 'host all all 127.0.0.1/32 trust\n'
		printf 'host all all ::1/128 trust\n'
		as_root cat "$hba"
	} >"$tmp"
	as_root cp "$tmp" "$hba"
	rm -f "$tmp"
}

start_postgresql() {
	if ! command -v pg_ctlcluster >/dev/null || [[ -z $(pg_version) ]]; then
		apt_install postgresql
	fi
	local version
	version=$(pg_version)
	[[ -n $version ]] || die "no PostgreSQL cluster found under /etc/postgresql after installation"
	local hba="/etc/postgresql/$version/main/pg_hba.conf" changed=false
	# Called outside a condition so that set -e still stops on a failed edit.
	if ! as_root grep -qF "$HBA_MARKER" "$hba"; then
		trust_local_tcp "$hba"
		changed=true
	fi
	if as_root pg_ctlcluster "$version" main status >/dev/null 2>&1; then
		if $changed; then
			as_root pg_ctlcluster "$version" main reload
		fi
	else
		log "starting PostgreSQL $version"
		as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
	fi
}

start_redis() {
	if ! command -v redis-server >/dev/null; then
		apt_install redis-server
	fi
	log "starting Redis"
	as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no
}

if ! pg_up; then
	start_postgresql
fi
# Start Redis only when nothing listens: a server that is still loading holds the port
# without answering PONG yet, and the wait below covers it.
if ! tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
	start_redis
fi

for ((i = 0; i < WAIT_SECONDS; i++)); do
	if pg_up && redis_answers; then
		log "PostgreSQL ($PG_HOST:$PG_PORT) and Redis ($REDIS_HOST:$REDIS_PORT) are up."
		exit 0
	fi
	sleep 1
done
pg_up || die "PostgreSQL does not answer on $PG_HOST:$PG_PORT after ${WAIT_SECONDS}s"
die "Redis does not answer on $REDIS_HOST:$REDIS_PORT after ${WAIT_SECONDS}s"
