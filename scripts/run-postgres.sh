#!/usr/bin/env bash
# run-postgres.sh [--prepare]: runs examples/postgres-redis/Caddyfile, the demo on
# PostgreSQL and Redis. It creates the database when it is missing, generates the
# development secrets once into $CARACAL_DEV_DIR (gitignored) and refuses to start
# when the demo's ports are taken. With --prepare it stops after the database and the
# secrets, and prints the variables it would pass, one NAME=value a line. Settings
# (environment):
#
#	CARACAL_DATABASE_URL  postgres://postgres@127.0.0.1:5432/caracal?sslmode=disable
#	CARACAL_REDIS_URL     redis://127.0.0.1:6379/0
#	CARACAL_DEV_DIR       .caracal-dev (the key-encryption key, stream key, admin token)
#	CARACAL_BIN           bin/caracal
set -euo pipefail
cd "$(dirname "$0")/.."

: "${CARACAL_DATABASE_URL:=postgres://postgres@127.0.0.1:5432/caracal?sslmode=disable}"
: "${CARACAL_REDIS_URL:=redis://127.0.0.1:6379/0}"
: "${CARACAL_DEV_DIR:=.caracal-dev}"
: "${CARACAL_BIN:=bin/caracal}"
export CARACAL_DATABASE_URL CARACAL_REDIS_URL

log() { printf 'run-postgres: %s\n' "$*" >&2; }
die() { printf 'run-postgres: %s\n' "$*" >&2; exit 1; }

# ensure_database creates the database CARACAL_DATABASE_URL names when it is missing,
# connecting to the server's postgres database to do so.
ensure_database() {
	local base=${CARACAL_DATABASE_URL%%\?*} query=""
	[[ $CARACAL_DATABASE_URL == *\?* ]] && query="?${CARACAL_DATABASE_URL#*\?}"
	[[ $base == postgres://* || $base == postgresql://* ]] ||
		die "CARACAL_DATABASE_URL must be a postgres:// URL, got ${base%%@*}@…"
	local name=${base##*/}
	[[ $name =~ ^[A-Za-z0-9_]+$ ]] || die "database name '$name' in CARACAL_DATABASE_URL: use letters, digits and _"
	local maint="${base%/*}/postgres$query"
	command -v psql >/dev/null && command -v createdb >/dev/null ||
		die "psql and createdb are needed (Debian: apt-get install postgresql-client)"
	local exists
	exists=$(psql "$maint" -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'") ||
		die "cannot reach PostgreSQL (start it with make services, or set CARACAL_DATABASE_URL)"
	if [[ $exists != 1 ]]; then
		createdb --maintenance-db="$maint" "$name"
		log "created database $name"
	fi
}

# secret FILE BYTES prints the secret kept in FILE, generating BYTES random bytes
# (base64) into it the first time.
secret() {
	local file="$CARACAL_DEV_DIR/$1"
	if [[ ! -s $file ]]; then
		(umask 077 && openssl rand -base64 "$2" >"$file")
		log "generated $file"
	fi
	cat "$file"
}

ensure_secrets() {
	mkdir -p "$CARACAL_DEV_DIR"
	chmod 700 "$CARACAL_DEV_DIR"
	# The key-encryption key seals the zone keys stored in the database: keep the file
	# as long as the database.
	CARACAL_KEK=$(secret kek 32)
	CARACAL_STREAM_KEY=$(secret stream_key 32)
	CARACAL_ADMIN_TOKEN=$(secret admin_token 24)
	export CARACAL_KEK CARACAL_STREAM_KEY CARACAL_ADMIN_TOKEN
}

# warn_redis says so when nothing answers at CARACAL_REDIS_URL: Caracal starts anyway
# and its gateway answers 503 until Redis is there.
warn_redis() {
	local hostport=${CARACAL_REDIS_URL#*://}
	hostport=${hostport#*@}
	hostport=${hostport%%/*}
	local host=${hostport%:*} port=${hostport##*:}
	[[ $hostport == *:* ]] || port=6379
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null ||
		log "warning: nothing answers at $host:$port (CARACAL_REDIS_URL); the gateway answers 503 until Redis does (make services starts it)"
}

ensure_database
ensure_secrets
if [[ ${1:-} == --prepare ]]; then
	for v in CARACAL_DATABASE_URL CARACAL_REDIS_URL CARACAL_KEK CARACAL_STREAM_KEY CARACAL_ADMIN_TOKEN; do
		printf '%s=%s\n' "$v" "${!v}"
	done
	exit 0
fi
warn_redis
scripts/check-ports.sh 127.0.0.1:8443 127.0.0.1:8081
log "admin token in $CARACAL_DEV_DIR/admin_token; database ${CARACAL_DATABASE_URL%%\?*}; revocations on ${CARACAL_REDIS_URL%%\?*}"
exec "$CARACAL_BIN" run --config examples/postgres-redis/Caddyfile --adapter caddyfile
