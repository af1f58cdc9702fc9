#!/usr/bin/env bash
# Two brokers on one PostgreSQL (issue 19's benchmark): a durable PostgreSQL (fsync and
# full-page writes on, 1 GB shared buffers, no standby) on loopback; the demo street of
# RESIDENTS residents published through broker A into it; broker B started afterwards with an
# empty data directory (its search index is built from the database); then the masked profile
# lookup against nginx serving the same profile statically (as scripts/load/ratio.sh does),
# through A, through B, and through both at once; and searches by the last 4 digits of an ID
# number through each. Prints every figure and the conditions.
#
#   bash scripts/load/pg-brokers.sh [RESIDENTS=1000000] [SECONDS=20] [CONNECTIONS=32]
#
# SAFEGRID_BENCH_STORE=embedded: the same steps on the embedded store, for the figures beside
# (one broker: the embedded store is not shared). With it, SAFEGRID_BENCH_DATA=<dir> serves a
# data directory a `safegrid demo --residents RESIDENTS --no-serve` already filled instead of
# publishing again (used in place; the benchmark only reads, but a broker's start may rebuild
# its search index). SAFEGRID_BENCH_SEARCH_CONNECTIONS="4 32" runs the search at each of
# those connection counts (default: CONNECTIONS).
#
# SAFEGRID_BIN=<binary> measures that build. Needs wrk, nginx (apt-get install -y wrk
# nginx-light), curl, python3 and the PostgreSQL of connectors/scripts/ci-postgres.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
RESIDENTS=${1:-1000000}
SECONDS_RUN=${2:-20}
CONNECTIONS=${3:-32}
PORT_A=${SAFEGRID_LOAD_PORT:-18443}
PORT_B=$((PORT_A + 2))
NGINX_PORT=$((PORT_A + 1))
PG_PORT=${SAFEGRID_BENCH_PG_PORT:-55610}
for tool in wrk nginx curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 2; }
done
if [ -n "${SAFEGRID_BIN:-}" ]; then
  BIN=$SAFEGRID_BIN
else
  cargo build --release -p safegrid >&2
  BIN=${CARGO_TARGET_DIR:-target}/release/safegrid
fi

WORK=$(mktemp -d /tmp/sg-pgbench-XXXX)
chmod 755 "$WORK" # the server runs as its own user when this runs as root
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  sleep 1
  SAFEGRID_PG_DIR="$WORK/pg" bash connectors/scripts/ci-postgres.sh stop >/dev/null 2>&1 || true
  [ -n "${SAFEGRID_BENCH_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

SHARED=yes
[ "${SAFEGRID_BENCH_STORE:-postgres}" = embedded ] && SHARED=""
A_DIR=$WORK/a
if [ -n "${SAFEGRID_BENCH_DATA:-}" ]; then
  [ -z "$SHARED" ] || { echo "SAFEGRID_BENCH_DATA needs SAFEGRID_BENCH_STORE=embedded" >&2; exit 2; }
  A_DIR=$(cd "$SAFEGRID_BENCH_DATA" && pwd)
fi
if [ -n "$SHARED" ]; then
  URL=$(SAFEGRID_PG_DURABLE=1 SAFEGRID_PG_DIR="$WORK/pg" bash connectors/scripts/ci-postgres.sh start "$PG_PORT")
  export SAFEGRID_STORE_BACKEND=postgres SAFEGRID_STORE_URL="$URL" SAFEGRID_STORE_SCHEMA=bench
  PSQL=("$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/psql" -X -q -t -A -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres)
  echo "== conditions: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB, PostgreSQL $("${PSQL[@]}" -c 'SHOW server_version'), fsync $("${PSQL[@]}" -c 'SHOW fsync'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
else
  echo "== conditions: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB, embedded store, load average $(cut -d' ' -f1-3 /proc/loadavg)"
fi

if [ -n "${SAFEGRID_BENCH_DATA:-}" ]; then
  echo "== serving $A_DIR as it is (no publish)"
else
  echo "== publish: safegrid demo --residents $RESIDENTS through broker A"
  /usr/bin/time -v "$BIN" demo --residents "$RESIDENTS" --data-dir "$A_DIR" --listen 127.0.0.1:0 \
    --no-serve >"$WORK/demo.out" 2>"$WORK/demo.err"
  grep -hE "^published" "$WORK/demo.out" "$WORK/demo.err"
  grep -E "Elapsed|Maximum resident" "$WORK/demo.err"
fi
if [ -n "$SHARED" ]; then
  records=$("${PSQL[@]}" -c "SELECT count(*) FROM bench.sources")
  bytes=$("${PSQL[@]}" -c "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'bench' AND c.relkind = 'r'")
  echo "store in PostgreSQL: $records source rows, $((bytes / 1048576)) MiB, $(awk -v b="$bytes" -v r="$records" 'BEGIN {printf "%.2f", b / r / 1024}') KB per source row"
else
  echo "store file: $(($(stat -c %s "$A_DIR/store.redb") / 1048576)) MiB"
fi

printf 'metrics_listen = "off"\n[limits]\nrate_per_second = 0\n' >"$WORK/bench.toml"
serve() { # DATA PORT
  SAFEGRID_LOG=warn "$BIN" serve --data-dir "$1" --dev --listen "127.0.0.1:$2" \
    --config "$WORK/bench.toml" >"$1.log" 2>&1 &
  PIDS+=($!)
}
ready() { # PORT -> waits for /readyz
  until curl -fks "https://127.0.0.1:$1/readyz" >/dev/null; do sleep 0.5; done
}
start_a=$(date +%s.%N)
serve "$A_DIR" "$PORT_A"
PID_A=${PIDS[-1]}
ready "$PORT_A"
echo "== broker A (the demo's data directory): ready in $(awk -v s="$start_a" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}') s"
if [ -n "$SHARED" ]; then
  cp "$WORK/a.master-key" "$WORK/b.master-key"
  start_b=$(date +%s.%N)
  serve "$WORK/b" "$PORT_B"
  PID_B=${PIDS[-1]}
  ready "$PORT_B"
  echo "== broker B, empty data directory: ready (index built from PostgreSQL) in $(awk -v s="$start_b" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}') s"
  SIDES="A B"
else
  PID_B=$PID_A
  SIDES="A"
fi

TOKEN_A=$("$BIN" token --data-dir "$A_DIR" --sub load-a --role street_officer --jurisdiction 110105001 --ttl 2h)
TOKEN_B=$TOKEN_A
[ -n "$SHARED" ] && TOKEN_B=$("$BIN" token --data-dir "$WORK/b" --sub load-b --role street_officer --jurisdiction 110105001 --ttl 2h)
IDS=$WORK/ids.txt
# shellcheck source=common.sh
source scripts/load/common.sh
collect_ids "$TOKEN_A" "$PORT_A" "$RESIDENTS" "$IDS"
# Queries: the last 4 digits of ID numbers, as an officer reads them off a masked profile.
QUERIES=$WORK/queries.txt
head -n 300 "$IDS" | while read -r id; do
  curl -ks -H "Authorization: Bearer $TOKEN_A" -H "X-Purpose: routine_visit" \
    "https://127.0.0.1:$PORT_A/v1/residents/$id"
  echo
done | python3 -c '
import json, re, sys
seen = set()
for line in sys.stdin:
    for m in re.finditer(r"\d{6}\*{8}(\d{3}[\dX])", line):
        if m.group(1) not in seen:
            seen.add(m.group(1)); print(m.group(1))
' >"$QUERIES"
echo "profiles: $(wc -l <"$IDS") unified ids; search queries: $(wc -l <"$QUERIES") distinct ID suffixes"

curl -fks -H "Authorization: Bearer $TOKEN_A" -H "X-Purpose: routine_visit" \
  "https://127.0.0.1:$PORT_A/v1/residents/$(head -n 1 "$IDS")" >"$WORK/profile.json"
start_nginx "$WORK" "$A_DIR/dev/tls-cert.pem" "$A_DIR/dev/tls-key.pem" "$NGINX_PORT" "$WORK/profile.json"

wrk_run() { # SCRIPT TOKEN URL CONNECTIONS -> "req/s p95 p99 errors"
  SAFEGRID_TOKEN=$2 SAFEGRID_IDS=$IDS SAFEGRID_QUERIES=$QUERIES \
    wrk -t2 -c"$4" -d"${SECONDS_RUN}s" -s "scripts/load/$1" "$3" \
    | awk '/= .* req\/s/ {rps=$(NF-1)} /^latency p50/ {p95=$6; p99=$9} /non-2xx/ {err=$NF} END {print rps, p95, p99, err}'
}
echo "== lookup: GET /v1/residents/{id}, wrk -t2 -c$CONNECTIONS -d${SECONDS_RUN}s (warm-up 5 s each first)"
SECONDS_SAVED=$SECONDS_RUN; SECONDS_RUN=5
wrk_run profile.lua "$TOKEN_A" "https://127.0.0.1:$PORT_A" "$CONNECTIONS" >/dev/null
[ -n "$SHARED" ] && wrk_run profile.lua "$TOKEN_B" "https://127.0.0.1:$PORT_B" "$CONNECTIONS" >/dev/null
SECONDS_RUN=$SECONDS_SAVED
printf '%-22s %10s %8s %8s %7s\n' server "req/s" "p95 ms" "p99 ms" errors
read -r n_rps n_p95 n_p99 n_err < <(wrk_run profile.lua "$TOKEN_A" "https://127.0.0.1:$NGINX_PORT" "$CONNECTIONS")
printf '%-22s %10s %8s %8s %7s\n' nginx "$n_rps" "$n_p95" "$n_p99" "$n_err"
for side in $SIDES; do
  if [ "$side" = A ]; then t=$TOKEN_A; p=$PORT_A; else t=$TOKEN_B; p=$PORT_B; fi
  read -r rps p95 p99 err < <(wrk_run profile.lua "$t" "https://127.0.0.1:$p" "$CONNECTIONS")
  printf '%-22s %10s %8s %8s %7s  ratio %s\n' "broker $side" "$rps" "$p95" "$p99" "$err" \
    "$(awk -v b="$rps" -v n="$n_rps" 'BEGIN {printf "%.3f", b / n}')"
done
if [ -n "$SHARED" ]; then
half=$(( CONNECTIONS / 2 ))
wrk_run profile.lua "$TOKEN_A" "https://127.0.0.1:$PORT_A" "$half" >"$WORK/both-a" &
both_a=$!
wrk_run profile.lua "$TOKEN_B" "https://127.0.0.1:$PORT_B" "$half" >"$WORK/both-b"
wait "$both_a"
read -r a_rps a_p95 a_p99 a_err <"$WORK/both-a"
read -r b_rps b_p95 b_p99 b_err <"$WORK/both-b"
sum=$(awk -v a="$a_rps" -v b="$b_rps" 'BEGIN {printf "%.0f", a + b}')
printf '%-22s %10s %8s %8s %7s  ratio %s\n' "A + B at once" "$sum" "$a_p95/$b_p95" "$a_p99/$b_p99" "$((a_err + b_err))" \
  "$(awk -v b="$sum" -v n="$n_rps" 'BEGIN {printf "%.3f", b / n}')"
fi

for c in ${SAFEGRID_BENCH_SEARCH_CONNECTIONS:-$CONNECTIONS}; do
  echo "== search: GET /v1/residents?q=<ID last 4>, wrk -t2 -c$c -d${SECONDS_RUN}s"
  for side in $SIDES; do
    if [ "$side" = A ]; then t=$TOKEN_A; p=$PORT_A; else t=$TOKEN_B; p=$PORT_B; fi
    read -r rps p95 p99 err < <(wrk_run search.lua "$t" "https://127.0.0.1:$p" "$c")
    printf '%-22s %10s req/s  p95 %s ms  p99 %s ms  errors %s\n' "broker $side" "$rps" "$p95" "$p99" "$err"
  done
done
echo "== RSS: A $(ps -o rss= -p "$PID_A" | awk '{printf "%.0f MiB", $1/1024}'), B $(ps -o rss= -p "$PID_B" | awk '{printf "%.0f MiB", $1/1024}'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
