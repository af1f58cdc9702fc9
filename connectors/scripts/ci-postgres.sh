#!/usr/bin/env bash
# A throwaway PostgreSQL server for the connectors' SQL tests.
#
#   connectors/scripts/ci-postgres.sh start [PORT]   # prints the URL on stdout
#   connectors/scripts/ci-postgres.sh stop
#
#   url=$(connectors/scripts/ci-postgres.sh start 55432)
#   SAFEGRID_TEST_PG_URL=$url cargo test -p connectors
#   connectors/scripts/ci-postgres.sh stop
#
# The cluster lives in $SAFEGRID_PG_DIR (default /tmp/safegrid-ci-pg), listens on 127.0.0.1
# only, trusts local connections and runs without fsync: test data only. PostgreSQL refuses
# to run as root, so as root the server runs as the system user `safegrid-ci` (created if
# needed). The binaries are installed with apt-get only if none are found.
set -euo pipefail

mode=${1:-start}
port=${2:-55432}
base=${SAFEGRID_PG_DIR:-/tmp/safegrid-ci-pg}
run_user=safegrid-ci

log() { echo "ci-postgres: $*" >&2; }

find_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z "$dir" ]] && command -v pg_ctl >/dev/null 2>&1; then
        dir=$(dirname "$(command -v pg_ctl)")
    fi
    echo "$dir"
}

pg_bin=$(find_bin)
if [[ -z "$pg_bin" || ! -x "$pg_bin/initdb" ]]; then
    if [[ "$mode" == "stop" ]]; then
        log "no PostgreSQL binaries: nothing to stop"
        exit 0
    fi
    log "PostgreSQL binaries not found; installing with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql-15 >&2 || apt-get install -y -qq postgresql >&2
    pg_bin=$(find_bin)
fi

# Runs a command as the cluster's owner.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u "$run_user" -- "$@"
        else
            su -s /bin/sh "$run_user" -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

case "$mode" in
start)
    if [[ $(id -u) -eq 0 ]] && ! id "$run_user" >/dev/null 2>&1; then
        useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$run_user"
    fi
    if [[ -f "$base/data/postmaster.pid" ]]; then
        as_owner "$pg_bin/pg_ctl" -D "$base/data" -m immediate stop >&2 || true
    fi
    rm -rf "$base"
    mkdir -p "$base"
    if [[ $(id -u) -eq 0 ]]; then
        chown "$run_user" "$base"
    fi
    as_owner "$pg_bin/initdb" -D "$base/data" -U postgres --auth=trust \
        --encoding=UTF8 --no-locale >"$base/initdb.log" 2>&1 \
        || { cat "$base/initdb.log" >&2; exit 1; }
    as_owner "$pg_bin/pg_ctl" -D "$base/data" -l "$base/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $base -c fsync=off -c full_page_writes=off" \
        start >&2 || { cat "$base/server.log" >&2; exit 1; }
    for _ in $(seq 1 60); do
        if "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; then
            echo "postgres://postgres@127.0.0.1:$port/postgres"
            exit 0
        fi
        sleep 0.5
    done
    log "the server did not become ready; log follows"
    cat "$base/server.log" >&2
    exit 1
    ;;
stop)
    if [[ -f "$base/data/postmaster.pid" ]]; then
        as_owner "$pg_bin/pg_ctl" -D "$base/data" -m fast -w stop >&2
    fi
    rm -rf "$base"
    ;;
*)
    log "usage: $0 start [PORT] | stop"
    exit 2
    ;;
esac
