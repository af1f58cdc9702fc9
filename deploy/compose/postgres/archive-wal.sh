#!/bin/sh
# archive_command of both PostgreSQL servers (postgresql.conf):
#   archive_command = 'sh /opt/pg-node/archive-wal.sh %p %f /var/lib/postgresql/archive'
# Copies one WAL file into the archive, gzip-compressed (a segment closed early by
# archive_timeout is mostly zeros), written to a temporary name, flushed, then renamed, so the
# archive never holds a partial file under a real name. A file already archived counts as
# success only if it is identical (archive_mode = always, or a retry after a crash between the
# copy and PostgreSQL noting it); a different file is never overwritten.
# Restore reads it back with: restore_command = 'gunzip -c /var/lib/postgresql/archive/%f.gz > %p'
set -eu

[ $# -eq 3 ] || { echo "usage: archive-wal.sh WAL_PATH WAL_NAME ARCHIVE_DIR" >&2; exit 2; }
src=$1
name=$2
dir=$3
dest="$dir/$name.gz"

if [ -f "$dest" ]; then
    if gzip -dc "$dest" | cmp -s - "$src"; then
        exit 0
    fi
    echo "archive-wal: $dest exists and differs from $src; not overwriting" >&2
    exit 1
fi
gzip -c "$src" > "$dest.tmp"
sync "$dest.tmp"
mv "$dest.tmp" "$dest"
sync "$dir"
