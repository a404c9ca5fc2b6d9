#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for the store tests and print its SQLAlchemy URL.
# Best effort: prints nothing (and the PostgreSQL tests skip) where PostgreSQL cannot be installed.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2 || exit 0
fi
bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
dir=$(mktemp -d /tmp/bench-ci-pg.XXXXXX)
chown postgres "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
run "$bin/initdb -D $dir/data -A trust -U bench" >&2
run "$bin/pg_ctl -D $dir/data -l $dir/log -o '-k $dir -h 127.0.0.1 -p $port' -w start" >&2
run "$bin/createdb -h 127.0.0.1 -p $port -U bench benchtest" >&2
echo "postgresql+psycopg://bench@127.0.0.1:$port/benchtest"
