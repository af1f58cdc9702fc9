#!/usr/bin/env bash
# End-to-end load on the masked profile lookup: HTTPS + JWT + policy + decrypt + mask +
# durable audit, against a real `safegrid serve` on this machine, driven by wrk.
#
#   bash scripts/load/http-profile.sh [RESIDENTS=20000] [SECONDS=20] [CONNECTIONS=32]
#
# Needs wrk (Debian: apt-get install -y wrk) and curl. Builds the release binary, fills a data
# directory with the demo street, serves it, looks up the unified ids of up to 2,000 gongan
# residents through /v1/residents/by-source, then runs wrk (2 threads) for SECONDS.
set -euo pipefail
cd "$(dirname "$0")/../.."
RESIDENTS=${1:-20000}
SECONDS_RUN=${2:-20}
CONNECTIONS=${3:-32}
PORT=${SAFEGRID_LOAD_PORT:-18443}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 2; }

cargo build --release -p safegrid >&2
BIN=${CARGO_TARGET_DIR:-target}/release/safegrid
WORK=$(mktemp -d)
DATA=$WORK/street
cleanup() {
  [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK" "$WORK.master-key" "$DATA.master-key"
}
trap cleanup EXIT

"$BIN" demo --residents "$RESIDENTS" --data-dir "$DATA" --listen 127.0.0.1:0 --no-serve >&2
# One token drives the whole load: the per-principal rate limit (50/s by default) is off here,
# and so is the metrics listener (another broker may hold its port).
printf 'metrics_listen = "off"\n[limits]\nrate_per_second = 0\n' >"$WORK/bench.toml"
SAFEGRID_LOG=warn "$BIN" serve --data-dir "$DATA" --dev --listen "127.0.0.1:$PORT" \
  --config "$WORK/bench.toml" >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 300); do
  curl -fks "https://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.2
done
TOKEN=$("$BIN" token --data-dir "$DATA" --sub load-test --role street_officer \
  --jurisdiction 110105001 --ttl 2h)
export SAFEGRID_TOKEN=$TOKEN SAFEGRID_IDS=$WORK/ids.txt

# Unified ids of gongan residents (some generated records are deliberately bad: skip 404s).
N=$(( RESIDENTS < 2000 ? RESIDENTS : 2000 ))
STEP=$(( RESIDENTS / N ))
: >"$SAFEGRID_IDS"
for i in $(seq 1 "$STEP" "$RESIDENTS" | head -n "$N"); do
  printf -v source "GA-%08d" "$i"
  id=$(curl -ks -H "Authorization: Bearer $TOKEN" -H "X-Purpose: routine_visit" \
    "https://127.0.0.1:$PORT/v1/residents/by-source/gongan/$source" \
    | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
  if [ -n "$id" ]; then echo "$id" >>"$SAFEGRID_IDS"; fi
done
echo "profiles: $(wc -l <"$SAFEGRID_IDS") unified ids; $CONNECTIONS connections, ${SECONDS_RUN}s" >&2

# Warm up (the search follower finishes its first pass; caches fill), then measure.
wrk -t2 -c"$CONNECTIONS" -d5s -s scripts/load/profile.lua "https://127.0.0.1:$PORT" >/dev/null
wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_RUN}s" -s scripts/load/profile.lua \
  "https://127.0.0.1:$PORT" | tail -n 3
echo "server RSS: $(ps -o rss= -p "$SERVER" | awk '{printf "%.0f MiB", $1/1024}')"
