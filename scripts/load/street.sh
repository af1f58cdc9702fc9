# Sourced by the load scripts: builds the release binary, fills a data directory with the demo
# street ($RESIDENTS residents), serves it on 127.0.0.1:$PORT (--dev: TLS 1.3, the instance's
# Ed25519 JWT key; the per-principal rate limit and the metrics listener off), and writes the
# unified ids of up to 2,000 gongan residents to $SAFEGRID_IDS. Sets BIN, WORK, DATA, SERVER,
# SAFEGRID_TOKEN (a street officer's) and SAFEGRID_IDS; `street_cleanup` stops the server and
# removes the directory (the caller adds it to its EXIT trap).
set -euo pipefail
command -v curl >/dev/null || { echo "curl is missing: apt-get install -y curl" >&2; exit 2; }

# SAFEGRID_BIN=<binary>: measure that build (e.g. an older commit's, for an A/B run).
if [ -n "${SAFEGRID_BIN:-}" ]; then
  BIN=$SAFEGRID_BIN
else
  cargo build --release -p safegrid >&2
  BIN=${CARGO_TARGET_DIR:-target}/release/safegrid
fi
WORK=$(mktemp -d)
DATA=$WORK/street
SERVER=""
street_cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null; fi
  rm -rf "$WORK" "$WORK.master-key" "$DATA.master-key"
}

"$BIN" demo --residents "$RESIDENTS" --data-dir "$DATA" --listen 127.0.0.1:0 --no-serve >&2
printf 'metrics_listen = "off"\n[limits]\nrate_per_second = 0\n' >"$WORK/bench.toml"
SAFEGRID_LOG=warn "$BIN" serve --data-dir "$DATA" --dev --listen "127.0.0.1:$PORT" \
  --config "$WORK/bench.toml" >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 300); do
  curl -fks "https://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.2
done
SAFEGRID_TOKEN=$("$BIN" token --data-dir "$DATA" --sub load-test --role street_officer \
  --jurisdiction 110105001 --ttl 2h)
SAFEGRID_IDS=$WORK/ids.txt
export SAFEGRID_TOKEN SAFEGRID_IDS

# shellcheck source=common.sh
source scripts/load/common.sh
collect_ids "$SAFEGRID_TOKEN" "$PORT" "$RESIDENTS" "$SAFEGRID_IDS"
