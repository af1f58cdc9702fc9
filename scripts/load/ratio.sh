#!/usr/bin/env bash
# The lookup against its ceiling (issue: "the lookup at half the speed of a static file"):
# nginx serving the same masked profile JSON as a static file over TLS 1.3, and the broker
# serving GET /v1/residents/{id} (JWT, plan, decrypt, mask, durable audit), one after the
# other in the same run, driven by the same wrk settings (2 threads, CONNECTIONS connections,
# SECONDS each, the same request script and headers). Prints both, the ratio, and the
# broker's CPU time per lookup (its user + system ticks over the run, the steadier measure
# on a shared machine).
#
#   bash scripts/load/ratio.sh [RESIDENTS=20000] [SECONDS=20] [CONNECTIONS=32] [ROUNDS=2]
#
# SAFEGRID_PERF=<file>: one more broker run under `perf record` (software clock sampling: this
# machine has no hardware counters), and the flat profile by symbol written to <file>, the
# recorded data beside it as <file>.data.
# Needs wrk and nginx (Debian: apt-get install -y wrk nginx-light) and curl. Both servers use
# the broker's dev certificate (ECDSA P-256) and TLS 1.3 only; nginx runs 2 workers (the
# machine's cores), the broker its default runtime. Rounds alternate nginx, broker, so drift
# in the machine's load shows in both.
set -euo pipefail
cd "$(dirname "$0")/../.."
RESIDENTS=${1:-20000}
SECONDS_RUN=${2:-20}
CONNECTIONS=${3:-32}
ROUNDS=${4:-2}
PORT=${SAFEGRID_LOAD_PORT:-18443}
NGINX_PORT=${SAFEGRID_NGINX_PORT:-18444}
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y wrk nginx-light curl" >&2; exit 2; }
done

cleanup() {
  if [ -n "${WORK:-}" ] && [ -f "$WORK/nginx.pid" ]; then
    kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
    sleep 0.5
  fi
  if declare -F street_cleanup >/dev/null; then street_cleanup; fi
}
trap cleanup EXIT
# shellcheck source=street.sh
source scripts/load/street.sh
TOKEN=$SAFEGRID_TOKEN

# The static file: one masked profile exactly as the broker serves it.
curl -fks -H "Authorization: Bearer $TOKEN" -H "X-Purpose: routine_visit" \
  "https://127.0.0.1:$PORT/v1/residents/$(head -n 1 "$SAFEGRID_IDS")" >"$WORK/profile.json"
start_nginx "$WORK" "$DATA/dev/tls-cert.pem" "$DATA/dev/tls-key.pem" "$NGINX_PORT" "$WORK/profile.json"
echo "profiles: $(wc -l <"$SAFEGRID_IDS") unified ids; static file $(wc -c <"$WORK/profile.json") bytes; $CONNECTIONS connections, ${SECONDS_RUN}s per run" >&2

run() { # URL -> "req/s p99"
  wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_RUN}s" -s scripts/load/profile.lua "$1" \
    | awk '/req\/s/ {rps=$(NF-1)} /latency/ {p99=$9} /non-2xx/ {err=$NF} END {print rps, p99, err}'
}
cpu_ticks() { # PID -> user + system clock ticks of the process so far
  awk '{print $14 + $15}' "/proc/$1/stat"
}
wrk -t2 -c"$CONNECTIONS" -d5s -s scripts/load/profile.lua "https://127.0.0.1:$PORT" >/dev/null
wrk -t2 -c"$CONNECTIONS" -d5s -s scripts/load/profile.lua "https://127.0.0.1:$NGINX_PORT" >/dev/null
printf '%-6s %-8s %12s %10s %8s\n' round server "req/s" "p99 ms" errors
best=""
for round in $(seq 1 "$ROUNDS"); do
  read -r nrps np99 nerr < <(run "https://127.0.0.1:$NGINX_PORT")
  printf '%-6s %-8s %12s %10s %8s\n' "$round" nginx "$nrps" "$np99" "$nerr"
  before=$(cpu_ticks "$SERVER")
  read -r brps bp99 berr < <(run "https://127.0.0.1:$PORT")
  after=$(cpu_ticks "$SERVER")
  printf '%-6s %-8s %12s %10s %8s\n' "$round" broker "$brps" "$bp99" "$berr"
  ratio=$(awk -v b="$brps" -v n="$nrps" 'BEGIN {printf "%.3f", b / n}')
  per_lookup=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v r="$brps" -v s="$SECONDS_RUN" \
    'BEGIN {printf "%.1f", t / hz / (r * s) * 1e6}')
  echo "round $round: ratio broker/nginx $ratio, broker p99 $bp99 ms, broker CPU $per_lookup µs per lookup"
done
if [ -n "${SAFEGRID_PERF:-}" ]; then
  command -v perf >/dev/null || { echo "perf is missing: apt-get install -y linux-perf" >&2; exit 2; }
  perf record -q -e cpu-clock -F 499 -g -p "$SERVER" -o "$WORK/perf.data" -- sleep "$SECONDS_RUN" &
  PERF=$!
  run "https://127.0.0.1:$PORT" >/dev/null
  wait "$PERF" || true
  perf report -i "$WORK/perf.data" --stdio --no-children -g none --sort symbol --percent-limit 0.5 \
    2>/dev/null | grep -v '^$' | grep -v '^#' | grep '%' >"$SAFEGRID_PERF" || true
  cp "$WORK/perf.data" "$SAFEGRID_PERF.data"
  echo "flat profile of the broker: $SAFEGRID_PERF (perf data: $SAFEGRID_PERF.data, e.g. perf report -i $SAFEGRID_PERF.data --children)" >&2
fi
echo "server RSS: $(ps -o rss= -p "$SERVER" | awk '{printf "%.0f MiB", $1/1024}'); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
