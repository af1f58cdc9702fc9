#!/usr/bin/env bash
# The project's one test command (README): starts what the tests need (a throwaway
# PostgreSQL for the SQL connector), runs the whole workspace's tests, and stops it again.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_script=connectors/scripts/ci-postgres.sh
pg_started=""
cleanup() {
  if [ -n "$pg_started" ]; then
    bash "$pg_script" stop "$pg_started" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

if [ -f "$pg_script" ] && [ -z "${SAFEGRID_TEST_PG_URL:-}" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if url=$(bash "$pg_script" start "$port"); then
    export SAFEGRID_TEST_PG_URL="$url"
    pg_started="$port"
    echo "PostgreSQL for the SQL connector tests: $SAFEGRID_TEST_PG_URL"
  else
    echo "could not start PostgreSQL; the SQL connector tests need it" >&2
    exit 1
  fi
fi

cargo test --workspace "$@"
