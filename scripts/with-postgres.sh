#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server and NAS_PIPE_TEST_POSTGRES set to its
# URL: its own data directory under a temporary folder, an unprivileged user (the Debian
# package's `postgres` when run as root), listening on 127.0.0.1 only at a free port, with
# password authentication; stopped and deleted when the command ends.
#
#   scripts/with-postgres.sh cargo test --release --test tests scale::
#
# Without PostgreSQL (Debian: apt-get install postgresql) the command runs without the
# variable, and the PostgreSQL tests say they are skipped.
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "with-postgres: PostgreSQL is not installed (Debian: apt-get install postgresql); running without it" >&2
    exec "$@"
fi

as_db() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

tmp=$(mktemp -d /tmp/nas-pipe-pg.XXXXXX)
chmod 755 "$tmp"
data="$tmp/data"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$password" > "$tmp/pw"
if [ "$(id -u)" = 0 ]; then chown -R postgres "$tmp"; fi

stop() {
    as_db "$bin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap stop EXIT

as_db "$bin/initdb" -D "$data" -U nas --pwfile="$tmp/pw" --auth=scram-sha-256 >"$tmp/initdb.log" 2>&1 ||
    { cat "$tmp/initdb.log" >&2; exit 2; }
as_db "$bin/pg_ctl" -D "$data" -l "$tmp/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$tmp -c max_connections=200" \
    start >/dev/null || { cat "$tmp/server.log" >&2; exit 2; }
PGPASSWORD="$password" "$bin/psql" -h 127.0.0.1 -p "$port" -U nas -d postgres -qc "CREATE DATABASE nas" >/dev/null

export PGPASSWORD="$password"
export NAS_PIPE_TEST_POSTGRES="postgres://nas@127.0.0.1:$port/nas"
echo "with-postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $NAS_PIPE_TEST_POSTGRES (data in $data)" >&2
"$@"
