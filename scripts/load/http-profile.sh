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

trap 'if declare -F street_cleanup >/dev/null; then street_cleanup; fi' EXIT
# shellcheck source=street.sh
source scripts/load/street.sh
echo "profiles: $(wc -l <"$SAFEGRID_IDS") unified ids; $CONNECTIONS connections, ${SECONDS_RUN}s" >&2

# Warm up (the search follower finishes its first pass; caches fill), then measure.
wrk -t2 -c"$CONNECTIONS" -d5s -s scripts/load/profile.lua "https://127.0.0.1:$PORT" >/dev/null
wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_RUN}s" -s scripts/load/profile.lua \
  "https://127.0.0.1:$PORT" | tail -n 3
echo "server RSS: $(ps -o rss= -p "$SERVER" | awk '{printf "%.0f MiB", $1/1024}')"
