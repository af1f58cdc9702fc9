#!/usr/bin/env bash
# Run once, by the postgres image's entrypoint (/docker-entrypoint-initdb.d), when the first
# primary's cluster is initialised: the role the standby clones and streams with, and
# SafeGrid's role and database (the brokers create their schema and tables on first start).
# A standby never runs it: it is a copy of the primary, roles included.
# The passwords reach psql through its environment (\getenv), never its command line.
# synchronous_commit = local for this session: postgresql.conf makes every commit wait for a
# standby, and none exists while the first primary is initialised. No `set -e`: the entrypoint
# sources a script that is not executable, and its shell options are its own.
if [ -z "${REPLICATION_PASSWORD:-}" ] || [ -z "${SAFEGRID_DB_PASSWORD:-}" ]; then
    echo "safegrid-roles.sh: REPLICATION_PASSWORD and SAFEGRID_DB_PASSWORD must be set" >&2
    exit 1
fi
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres <<'SQL' || exit 1
SET synchronous_commit = local;
\getenv replication_password REPLICATION_PASSWORD
\getenv safegrid_password SAFEGRID_DB_PASSWORD
CREATE ROLE replicator WITH LOGIN REPLICATION PASSWORD :'replication_password';
CREATE ROLE safegrid WITH LOGIN PASSWORD :'safegrid_password';
CREATE DATABASE safegrid OWNER safegrid;
REVOKE ALL ON DATABASE safegrid FROM PUBLIC;
SQL
