#!/usr/bin/env bash
# A throwaway MariaDB server for the connectors' SQL tests of the MySQL family (MySQL, MariaDB,
# TiDB and OceanBase speak the same protocol; the tests use MariaDB).
#
#   connectors/scripts/ci-mariadb.sh start [PORT]   # prints the URL on stdout
#   connectors/scripts/ci-mariadb.sh stop
#
#   url=$(connectors/scripts/ci-mariadb.sh start 53306)
#   SAFEGRID_TEST_MYSQL_URL=$url cargo test -p connectors
#   connectors/scripts/ci-mariadb.sh stop
#
# The server lives in $SAFEGRID_MARIADB_DIR (default /tmp/safegrid-ci-mariadb), listens on
# 127.0.0.1 only, and flushes its log about once a second rather than at every commit: test
# data only. Each start creates the database `safegrid_test` and the user `safegrid` with a
# fresh random password, and prints `mysql://safegrid:<password>@127.0.0.1:<PORT>/safegrid_test`.
# As root the server runs as the system user `safegrid-ci` (created if needed). The binaries are
# installed with apt-get (package mariadb-server) only if none are found.
set -euo pipefail

mode=${1:-start}
port=${2:-53306}
base=${SAFEGRID_MARIADB_DIR:-/tmp/safegrid-ci-mariadb}
run_user=safegrid-ci
database=safegrid_test
db_user=safegrid

log() { echo "ci-mariadb: $*" >&2; }

# The first of the given programs found in PATH or in /usr/sbin, /usr/bin.
find_prog() {
    local name
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return
        fi
        for dir in /usr/sbin /usr/bin; do
            if [[ -x "$dir/$name" ]]; then
                echo "$dir/$name"
                return
            fi
        done
    done
}

find_bins() {
    server=$(find_prog mariadbd mysqld)
    install_db=$(find_prog mariadb-install-db mysql_install_db)
    client=$(find_prog mariadb mysql)
}

stop_server() {
    local pid
    [[ -f "$base/mariadb.pid" ]] || return 0
    pid=$(cat "$base/mariadb.pid")
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || return 0
            sleep 0.5
        done
        log "the server did not stop within 30 s; killing it"
        kill -9 "$pid" 2>/dev/null || true
    fi
}

case "$mode" in
start) ;;
stop)
    stop_server
    rm -rf "$base"
    exit 0
    ;;
*)
    log "usage: $0 start [PORT] | stop"
    exit 2
    ;;
esac

find_bins
if [[ -z "$server" || -z "$install_db" || -z "$client" ]]; then
    log "MariaDB binaries not found; installing mariadb-server with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq mariadb-server >&2
    find_bins
    if [[ -z "$server" || -z "$install_db" || -z "$client" ]]; then
        log "mariadb-server is installed but mariadbd, mariadb-install-db or mariadb is missing"
        exit 1
    fi
fi

# Runs a command as the server's owner.
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

# The administrator's client: over the private socket, authenticated as the OS user running
# this script (MariaDB's unix_socket authentication, set up by the install step).
admin() {
    "$client" --no-defaults --protocol=socket --socket="$base/mariadb.sock" \
        --user="$(id -un)" "$@"
}

if [[ $(id -u) -eq 0 ]] && ! id "$run_user" >/dev/null 2>&1; then
    useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$run_user"
fi
stop_server
rm -rf "$base"
mkdir -p "$base"
chmod 700 "$base"
owner_flag=()
if [[ $(id -u) -eq 0 ]]; then
    chown "$run_user" "$base"
    owner_flag=(--user="$run_user")
fi

"$install_db" --no-defaults --datadir="$base/data" "${owner_flag[@]}" \
    --auth-root-authentication-method=socket --auth-root-socket-user="$(id -un)" \
    --skip-test-db --skip-name-resolve >"$base/install.log" 2>&1 \
    || { cat "$base/install.log" >&2; exit 1; }

# The server logs to stderr, which goes to server.log; it must not keep this script's stdout
# open, since the caller reads the URL from it.
as_owner "$server" --no-defaults --datadir="$base/data" \
    --socket="$base/mariadb.sock" --pid-file="$base/mariadb.pid" \
    --bind-address=127.0.0.1 --port="$port" --skip-name-resolve \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    --innodb-flush-log-at-trx-commit=2 --innodb-doublewrite=0 \
    --innodb-buffer-pool-size=64M --skip-log-bin \
    </dev/null >>"$base/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 120); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        break
    fi
    if admin --execute="SELECT 1" >/dev/null 2>&1; then
        password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
        admin <<SQL
CREATE DATABASE $database CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER '$db_user'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON $database.* TO '$db_user'@'127.0.0.1';
SQL
        echo "mysql://$db_user:$password@127.0.0.1:$port/$database"
        exit 0
    fi
    sleep 0.5
done
log "the server did not become ready; log follows"
cat "$base/server.log" >&2
stop_server
kill "$server_pid" 2>/dev/null || true
exit 1
