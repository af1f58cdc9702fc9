#!/usr/bin/env bash
# Point-in-time recovery of the pair's database into an empty data directory
# (deploy/README.md, "Backup and point-in-time recovery"). Run with both servers stopped, in a
# one-off container of the postgres image that mounts the server's volumes (docker compose run
# …, or a Kubernetes Pod on the volume data-pg-0):
#
#   pg-restore.sh BASE_BACKUP_DIR WAL_DIR [TARGET_TIME]
#
# BASE_BACKUP_DIR  base.tar.gz and pg_wal.tar.gz, as pg_basebackup -Ft -z -X stream wrote them
# WAL_DIR          archived WAL from that base backup on (archive-wal.sh's NAME.gz files)
# TARGET_TIME      e.g. '2025-06-01 09:30:00+08': replay up to this moment; omitted: replay all
#                  the WAL there is
#
# The WAL is copied beside the data directory (restore-wal/), the recovery settings go into
# postgresql.auto.conf and recovery.signal is created. At its next start the server replays the
# WAL to the target, then becomes a primary on a new timeline (pg-node.sh still refuses to
# start it if the other server is a primary).
set -euo pipefail

log() { printf 'pg-restore: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: pg-restore.sh BASE_BACKUP_DIR WAL_DIR [TARGET_TIME]"
base=$1
wal=$2
target=${3:-}
: "${PGDATA:?PGDATA must be set}"
volume=$(dirname "$PGDATA")
[ -f "$base/base.tar.gz" ] && [ -f "$base/pg_wal.tar.gz" ] || die "$base lacks base.tar.gz or pg_wal.tar.gz"
[ -d "$wal" ] || die "$wal is not a directory"
if [ -d "$PGDATA" ] && [ -n "$(ls -A "$PGDATA")" ]; then
    die "$PGDATA is not empty: restore into an empty data volume"
fi
if [ -n "$target" ]; then
    # A quote in the value would end the setting; the time itself never holds one.
    [[ $target != *"'"* ]] || die "TARGET_TIME must not contain a quote"
fi

mkdir -p "$PGDATA"
chmod 0700 "$PGDATA"
tar -xzf "$base/base.tar.gz" -C "$PGDATA"
tar -xzf "$base/pg_wal.tar.gz" -C "$PGDATA/pg_wal"
rm -rf "$volume/restore-wal"
cp -R "$wal" "$volume/restore-wal"
# A base backup taken on a standby carries standby.signal: this server is to become a primary.
rm -f "$PGDATA/standby.signal"
{
    echo "# Written by pg-restore.sh; remove with ALTER SYSTEM RESET once the restore is done."
    echo "restore_command = 'gunzip -c $volume/restore-wal/%f.gz > %p'"
    [ -z "$target" ] || echo "recovery_target_time = '$target'"
    echo "recovery_target_action = 'promote'"
} >> "$PGDATA/postgresql.auto.conf"
touch "$PGDATA/recovery.signal"
if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$volume"
fi
log "restored $base into $PGDATA; the next start replays the WAL of $wal${target:+ up to $target}"
