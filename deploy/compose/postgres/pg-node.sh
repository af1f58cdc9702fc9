#!/usr/bin/env bash
# One server of SafeGrid's PostgreSQL pair: a primary, and a standby that streams from it and
# confirms every commit (synchronous replication). The same script runs both servers of
# deploy/compose/compose.yaml and both pods of deploy/kubernetes/postgres.yaml (a copy in the
# ConfigMap pg-scripts there; CI checks the copy is identical).
#
#   pg-node.sh prepare        if the data directory is empty and a peer is the primary, clone it
#                             (pg_basebackup) so that this server starts as its standby
#   pg-node.sh start CMD...   prepare, refuse to start a second primary, then exec CMD (the
#                             image's `docker-entrypoint.sh postgres -c config_file=…`)
#
# A server's role comes from its data directory, never from its name:
# - empty: a peer that is the primary is cloned, with this server's own replication slot and
#   application_name (PG_NODE_NAME, the name synchronous_standby_names lists). If no peer
#   answers and this server is PG_INITIAL_PRIMARY, the directory stays empty and the image's
#   entrypoint initialises a new cluster (the first start of the pair). Any other server
#   waits for a primary to clone.
# - a standby's (standby.signal): starts and follows the primary its primary_conninfo names.
# - a primary's: starts, unless a peer already runs as primary. Then the other server was
#   promoted while this one was down, this copy is stale, and starting it would offer the
#   brokers two primaries: it stops here and must be rebuilt (deploy/README.md, "Failover").
#
# Nothing here promotes a standby: promotion is a manual decision (pg_ctl promote or
# SELECT pg_promote()). Production should use Patroni or a PostgreSQL operator for it.
#
# Environment (PG_* of the deployment; the passwords from .env or a Secret):
#   PGDATA                data directory: a subdirectory of the volume, whose root keeps the
#                         replication pass file out of the data directory and of its copies
#   PG_SELF               this server's host name as the other one reaches it
#   PG_PEERS              host names of both servers, space-separated (PG_SELF is skipped)
#   PG_INITIAL_PRIMARY    the host that initialises the cluster when nothing exists yet
#   PG_NODE_NAME          slot and application_name as a standby (default: PG_SELF's first
#                         label with '-' as '_': pg-standby -> pg_standby, pg-1.pg -> pg_1)
#   PG_ARCHIVE_DIR        the WAL archive directory (archive-wal.sh), made writable here
#   PG_PORT (5432), PG_CLONE_WAIT_SECONDS (600), REPLICATION_USER (replicator)
#   REPLICATION_PASSWORD  the replication role's password (required)
set -euo pipefail

log() { printf 'pg-node: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

mode=${1:-}
case "$mode" in
    prepare) shift ;;
    start) shift; [ $# -gt 0 ] || die "usage: pg-node.sh start COMMAND [ARG...]" ;;
    *) die "usage: pg-node.sh prepare | pg-node.sh start COMMAND [ARG...]" ;;
esac

: "${PGDATA:?PGDATA must be set}"
: "${PG_SELF:?PG_SELF must be set (this server host name)}"
: "${PG_PEERS:?PG_PEERS must be set (both servers host names)}"
: "${PG_INITIAL_PRIMARY:?PG_INITIAL_PRIMARY must be set}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set}"
PG_PORT=${PG_PORT:-5432}
PG_ARCHIVE_DIR=${PG_ARCHIVE_DIR:-/var/lib/postgresql/archive}
PG_CLONE_WAIT_SECONDS=${PG_CLONE_WAIT_SECONDS:-600}
REPLICATION_USER=${REPLICATION_USER:-replicator}
node_name=${PG_NODE_NAME:-${PG_SELF%%.*}}
node_name=${node_name//-/_}
volume=$(dirname "$PGDATA")
passfile="$volume/replication.pgpass"

# The placeholders of .env.example must never become real passwords.
for var in POSTGRES_PASSWORD REPLICATION_PASSWORD SAFEGRID_DB_PASSWORD; do
    case "${!var:-}" in
        REPLACE*) die "$var still holds its placeholder: set a real password" ;;
    esac
done
[[ $node_name =~ ^[a-z_][a-z0-9_]{0,62}$ ]] \
    || die "PG_NODE_NAME '$node_name' is not a valid slot name (a-z, 0-9, _)"

# Under Docker the container starts as root: hand the volumes to postgres, then go on as
# postgres (on Kubernetes the pod already runs as postgres and fsGroup makes them writable).
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$volume" "$PG_ARCHIVE_DIR"
    chown postgres:postgres "$volume" "$PG_ARCHIVE_DIR"
    chmod 0700 "$volume" "$PG_ARCHIVE_DIR"
    exec gosu postgres bash "${BASH_SOURCE[0]}" "$mode" "$@"
fi

# libpq's pass file: the password stays out of command lines and out of primary_conninfo,
# which pg_basebackup -R writes into the data directory (and so into every base backup).
write_passfile() {
    local escaped=${REPLICATION_PASSWORD//\\/\\\\}
    escaped=${escaped//:/\\:}
    (umask 077 && printf '*:%s:*:%s:%s\n' "$PG_PORT" "$REPLICATION_USER" "$escaped" > "$passfile.tmp")
    mv -f "$passfile.tmp" "$passfile"
}

conninfo() {
    printf 'host=%s port=%s user=%s passfile=%s connect_timeout=5' \
        "$1" "$PG_PORT" "$REPLICATION_USER" "$passfile"
}

# What a host is: primary, standby, starting (up, not accepting connections yet), down (no
# answer, or no such host), or unknown (it answers but its role cannot be read).
role_of() {
    local host=$1 answer status=0
    pg_isready -q -h "$host" -p "$PG_PORT" -t 5 || status=$?
    case $status in
        0) ;;
        1) echo starting; return ;;
        *) echo down; return ;;
    esac
    # A physical replication connection answers SHOW; in_hot_standby is on while in recovery.
    if answer=$(psql -XAtq -d "$(conninfo "$host") replication=true" -c 'SHOW in_hot_standby' 2>/dev/null); then
        case $answer in
            off) echo primary ;;
            on) echo standby ;;
            *) echo unknown ;;
        esac
    else
        echo unknown
    fi
}

peers() {
    local host
    for host in $PG_PEERS; do
        [ "$host" = "$PG_SELF" ] || echo "$host"
    done
}

has_data() { [ -s "$PGDATA/PG_VERSION" ]; }

clone_from() {
    local primary=$1 partial="$PGDATA.partial"
    local source
    source="$(conninfo "$primary") application_name=$node_name"
    log "cloning $primary into $PGDATA as standby '$node_name'"
    rm -rf "$partial"
    # A slot left by an earlier copy of this server holds WAL on the primary and would make
    # -C fail; a slot in use by a running server is not dropped, and then -C fails loudly.
    pg_receivewal -d "$source" --drop-slot -S "$node_name" >/dev/null 2>&1 || true
    pg_basebackup -d "$source" -D "$partial" -R -X stream -C -S "$node_name" -c fast
    # Settings a copy must not inherit from the primary's postgresql.auto.conf:
    # synchronous_standby_names belongs to postgresql.conf (mounted, the same on both servers),
    # and an override such as '' from an operator's emergency step would follow this server into
    # its own promotion; a point-in-time restore's recovery settings would make the standby stop
    # replaying at the restore's target.
    sed -i -E '/^[[:space:]]*(synchronous_standby_names|restore_command|recovery_target[a-z_]*)[[:space:]]*=/d' \
        "$partial/postgresql.auto.conf"
    [ -f "$partial/standby.signal" ] || die "pg_basebackup -R wrote no standby.signal"
    grep -q "application_name=$node_name" "$partial/postgresql.auto.conf" \
        || die "primary_conninfo lacks application_name=$node_name: synchronous replication would not know this standby"
    # Renamed only once complete: an interrupted clone leaves $partial, never a PGDATA that
    # looks like a data directory and cannot start.
    rmdir "$PGDATA" 2>/dev/null || true
    mv "$partial" "$PGDATA"
    log "cloned; starting as standby of $primary"
}

prepare() {
    write_passfile
    if has_data; then
        # A volume whose ownership Kubernetes changed (fsGroup) can give the directory group
        # write, and PostgreSQL refuses to start on that.
        chmod 0700 "$PGDATA"
        return 0
    fi
    if [ -d "$PGDATA" ] && [ -n "$(ls -A "$PGDATA")" ]; then
        die "$PGDATA is neither empty nor a data directory (no PG_VERSION): inspect it, then empty it"
    fi
    local deadline=$((SECONDS + PG_CLONE_WAIT_SECONDS)) host role
    while :; do
        local answered=""
        for host in $(peers); do
            role=$(role_of "$host")
            case $role in
                primary) clone_from "$host"; return 0 ;;
                down) ;;
                *) answered="$answered $host ($role)" ;;
            esac
        done
        if [ "$PG_SELF" = "$PG_INITIAL_PRIMARY" ]; then
            if [ -z "$answered" ]; then
                log "no peer answers: initialising a new cluster on $PG_SELF"
                return 0
            fi
            # A running standby without a primary is this server's former standby: this
            # server lost its data. Promote that standby; this server then clones it.
            die "empty data directory, but peers run without a primary:$answered; promote the standby first (deploy/README.md, Failover)"
        fi
        [ $SECONDS -lt $deadline ] || die "no primary among [$(peers | tr '\n' ' ')] after ${PG_CLONE_WAIT_SECONDS}s"
        log "waiting for a primary to clone among: $(peers | tr '\n' ' ')"
        sleep 5
    done
}

# Starting as primary (no standby.signal) while a peer is primary would split the pair.
fence() {
    has_data || return 0
    [ -f "$PGDATA/standby.signal" ] && return 0
    local host role
    for host in $(peers); do
        for _ in 1 2 3 4 5 6; do
            role=$(role_of "$host")
            [ "$role" = starting ] || break
            sleep 5
        done
        case $role in
            primary) die "$host is the primary; this server's data is older: rebuild it as a standby (deploy/README.md, Failover)" ;;
            unknown) die "$host answers but its role cannot be read (replication login refused?); not starting as a second primary" ;;
        esac
    done
}

prepare
if [ "$mode" = start ]; then
    fence
    exec "$@"
fi
