#!/usr/bin/env bash
# A throwaway PostgreSQL server for the SQL connectors' tests and the PostgreSQL store's, and
# a streaming-replication standby for it.
#
#   connectors/scripts/ci-postgres.sh start [PORT]   # prints the URL on stdout
#   connectors/scripts/ci-postgres.sh stop
#
#   # A synchronous standby of the server on PRIMARY_PORT, in its own directory: a base backup
#   # of the primary, started on PORT; the primary then waits for it on every commit
#   # (synchronous_standby_names). Prints the standby's URL once it is streaming in sync.
#   SAFEGRID_PG_DIR=/tmp/standby connectors/scripts/ci-postgres.sh standby PORT PRIMARY_PORT
#   SAFEGRID_PG_DIR=/tmp/standby connectors/scripts/ci-postgres.sh promote   # pg_ctl promote
#   SAFEGRID_PG_DIR=/tmp/x connectors/scripts/ci-postgres.sh kill   # SIGKILL, as a lost machine
#
#   url=$(connectors/scripts/ci-postgres.sh start 55432)
#   SAFEGRID_TEST_PG_URL=$url cargo test -p connectors
#   connectors/scripts/ci-postgres.sh stop
#
# The cluster lives in $SAFEGRID_PG_DIR (default /tmp/safegrid-ci-pg), listens on 127.0.0.1
# only, trusts local connections and runs without fsync: test data only
# (SAFEGRID_PG_DURABLE=1: with fsync and full-page writes, and 1 GB of shared buffers, as the
# benchmarks run it). PostgreSQL refuses
# to run as root, so as root the server runs as the system user `safegrid-ci` (created if
# needed). The binaries are installed with apt-get only if none are found.
set -euo pipefail

mode=${1:-start}
if [[ "${SAFEGRID_PG_DURABLE:-}" == 1 ]]; then
    server_opts="-c shared_buffers=1GB"
else
    server_opts="-c fsync=off -c full_page_writes=off"
fi
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

# An empty cluster directory owned by the server's user (a server left running there stopped).
fresh_dir() {
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
}

case "$mode" in
start)
    fresh_dir
    as_owner "$pg_bin/initdb" -D "$base/data" -U postgres --auth=trust \
        --encoding=UTF8 --no-locale >"$base/initdb.log" 2>&1 \
        || { cat "$base/initdb.log" >&2; exit 1; }
    as_owner "$pg_bin/pg_ctl" -D "$base/data" -l "$base/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $base $server_opts" \
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
standby)
    primary_port=${3:?usage: $0 standby PORT PRIMARY_PORT}
    name=safegrid_standby
    fresh_dir
    # -R writes standby.signal and primary_conninfo; the application name is what the
    # primary's synchronous_standby_names waits for.
    as_owner "$pg_bin/pg_basebackup" -D "$base/data" -R -X stream -c fast \
        -d "host=127.0.0.1 port=$primary_port user=postgres application_name=$name" \
        >"$base/basebackup.log" 2>&1 || { cat "$base/basebackup.log" >&2; exit 1; }
    as_owner "$pg_bin/pg_ctl" -D "$base/data" -l "$base/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $base $server_opts" \
        start >&2 || { cat "$base/server.log" >&2; exit 1; }
    # Only now is the primary told to wait for it: set before the base backup, the standby
    # would inherit the setting and, once promoted, wait for a standby of its own forever.
    psql_primary=("$pg_bin/psql" -X -q -t -A -h 127.0.0.1 -p "$primary_port" -U postgres -d postgres)
    "${psql_primary[@]}" -c "ALTER SYSTEM SET synchronous_standby_names = '$name'" >&2
    "${psql_primary[@]}" -c "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 1 120); do
        state=$("${psql_primary[@]}" -c \
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = '$name'" || true)
        if [[ "$state" == "sync" ]]; then
            echo "postgres://postgres@127.0.0.1:$port/postgres"
            exit 0
        fi
        sleep 0.5
    done
    log "the standby did not reach synchronous streaming; its log follows"
    cat "$base/server.log" >&2
    exit 1
    ;;
promote)
    as_owner "$pg_bin/pg_ctl" -D "$base/data" -w -t 60 promote >&2
    ;;
kill)
    # The machine is gone: the postmaster is frozen so that it restarts nothing, its children
    # (backends, WAL sender, writers) are killed, then the postmaster itself. No shutdown
    # checkpoint, no goodbye to clients or to the standby.
    if [[ -f "$base/data/postmaster.pid" ]]; then
        pid=$(head -n 1 "$base/data/postmaster.pid")
        kill -STOP "$pid" 2>/dev/null || true
        pkill -KILL -P "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    fi
    ;;
stop)
    if [[ -f "$base/data/postmaster.pid" ]]; then
        # (Fails harmlessly when the server was killed: nothing is left to stop.)
        as_owner "$pg_bin/pg_ctl" -D "$base/data" -m fast -w stop >&2 || true
    fi
    rm -rf "$base"
    ;;
*)
    log "usage: $0 start [PORT] | standby PORT PRIMARY_PORT | promote | kill | stop"
    exit 2
    ;;
esac
