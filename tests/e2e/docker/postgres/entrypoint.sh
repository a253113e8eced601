#!/bin/bash
# First start: initdb with the password from POSTGRES_PASSWORD_FILE (read as root: the secret file is
# the host user's, mode 0600), then create POSTGRES_DB. Every start: run postgres as user postgres.
set -euo pipefail
as_postgres() { setpriv --reuid postgres --regid postgres --init-groups "$@"; }
password=$(cat "${POSTGRES_PASSWORD_FILE:?}")
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$password" >"$pwfile"
  chown postgres "$pwfile"
  # UTF8 as the official image (a SQL_ASCII database hands text to psycopg as bytes).
  as_postgres initdb -D "$PGDATA" -U "${POSTGRES_USER:?}" --pwfile="$pwfile" --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust >/dev/null
  rm -f "$pwfile"
  as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  as_postgres createdb -U "$POSTGRES_USER" "${POSTGRES_DB:?}"
  as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec setpriv --reuid postgres --regid postgres --init-groups postgres -D "$PGDATA" -c listen_addresses=127.0.0.1
