#!/usr/bin/env bash
# Search load at N residents (default 200000): index build, in-process load, and HTTPS end to
# end against the real broker (TLS, JWT, policy, masking, audit). See BENCHMARKS.md, Search.
#
#   scripts/load-search.sh [N]          # KEEP=dir keeps the ingested store between runs
set -euo pipefail
N=${1:-200000}
KEEP=${KEEP:-$(pwd)/target/search-bench}
WARMUP=$(( N >= 1000000 ? 60 : 10 ))
mkdir -p "$KEEP"
cargo bench -p broker --bench search -- load --residents "$N" --threads 4 --seconds 20 --keep "$KEEP"
cargo bench -p broker --bench search -- http --residents "$N" --threads 4 --seconds 20 \
  --warmup "$WARMUP" --keep "$KEEP" --reuse-index
