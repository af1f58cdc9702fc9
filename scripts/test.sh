#!/usr/bin/env bash
# The project's one test command (README): starts what the tests need (a throwaway
# PostgreSQL for the SQL connector and the PostgreSQL store, with a synchronous streaming
# standby, so that every commit of the PostgreSQL pass waits for the standby as in production;
# a throwaway MariaDB; ChromeDriver),
# runs the whole workspace's tests, then the storage-facing ones again on the PostgreSQL store,
# and stops them again.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_script=connectors/scripts/ci-postgres.sh
mysql_script=connectors/scripts/ci-mariadb.sh
pg_started=""
standby_started=""
standby_dir="${SAFEGRID_PG_DIR:-/tmp/safegrid-ci-pg}-standby"
mysql_started=""
chrome_script=tests/scripts/chromedriver.sh
chrome_started=""
cleanup() {
  if [ -n "$chrome_started" ]; then
    bash "$chrome_script" stop "$chrome_started" >/dev/null 2>&1 || true
  fi
  if [ -n "$standby_started" ]; then
    SAFEGRID_PG_DIR="$standby_dir" bash "$pg_script" stop >/dev/null 2>&1 || true
  fi
  if [ -n "$pg_started" ]; then
    bash "$pg_script" stop "$pg_started" >/dev/null 2>&1 || true
  fi
  if [ -n "$mysql_started" ]; then
    bash "$mysql_script" stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

if [ -f "$pg_script" ] && [ -z "${SAFEGRID_TEST_PG_URL:-}" ]; then
  port=$(free_port)
  if url=$(bash "$pg_script" start "$port"); then
    export SAFEGRID_TEST_PG_URL="$url"
    pg_started="$port"
    echo "PostgreSQL for the SQL connector tests: $SAFEGRID_TEST_PG_URL"
  else
    echo "could not start PostgreSQL; the SQL connector tests need it" >&2
    exit 1
  fi
  standby_port=$(free_port)
  if url=$(SAFEGRID_PG_DIR="$standby_dir" bash "$pg_script" standby "$standby_port" "$port"); then
    export SAFEGRID_TEST_PG_STANDBY_URL="$url"
    standby_started="$standby_port"
    echo "its synchronous standby: $SAFEGRID_TEST_PG_STANDBY_URL"
  else
    echo "could not start the PostgreSQL standby; the store's failover tests need it" >&2
    exit 1
  fi
fi

if [ -f "$mysql_script" ] && [ -z "${SAFEGRID_TEST_MYSQL_URL:-}" ]; then
  port=$(free_port)
  if url=$(bash "$mysql_script" start "$port"); then
    export SAFEGRID_TEST_MYSQL_URL="$url"
    mysql_started="$port"
    # The URL holds the server's fresh password: shown without it.
    echo "MariaDB for the SQL connector tests: $(sed -E 's#//([^:/@]+):[^@]*@#//\1:***@#' <<<"$url")"
  else
    echo "could not start MariaDB; the SQL connector tests need it" >&2
    exit 1
  fi
fi

if [ -f "$chrome_script" ] && [ -z "${SAFEGRID_TEST_WEBDRIVER:-}" ]; then
  port=$(free_port)
  if url=$(bash "$chrome_script" start "$port"); then
    export SAFEGRID_TEST_WEBDRIVER="$url"
    chrome_started="$port"
    echo "ChromeDriver for the console's browser tests: $SAFEGRID_TEST_WEBDRIVER"
  else
    echo "could not start ChromeDriver; the console's browser tests need it" >&2
    exit 1
  fi
fi

cargo test --workspace "$@"
# The storage-facing tests once more on the other engine: every store the unit tests (engine,
# search, broker) and every end-to-end broker open is a fresh schema of the PostgreSQL above
# (the vault's own store tests run on both engines in each pass).
# (`--workspace` in both, so that nothing is built again with other features.)
SAFEGRID_TEST_STORE=postgres cargo test --workspace --lib "$@"
SAFEGRID_TEST_STORE=postgres cargo test --workspace --test e2e "$@"
