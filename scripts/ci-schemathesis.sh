#!/usr/bin/env bash
# API contract: loads demo data into a dev broker, then runs schemathesis against its
# /openapi.json with a street officer's token for a bounded number of cases; fails on any
# 5xx or any response that violates the schema.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SAFEGRID_CI_VENV:-target/ci-venv}"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis

cargo build --quiet -p safegrid --bin safegrid
bin="${CARGO_TARGET_DIR:-target}/debug/safegrid"
work=$(mktemp -d)
"$bin" demo --no-serve --residents 300 --data-dir "$work/data" --listen 127.0.0.1:0 >/dev/null 2>&1
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# One token drives every generated case: the per-principal rate limit (whose 429 is in the
# schema) would answer most of them, so it is off here; the metrics port stays closed.
SAFEGRID_LIMITS_RATE_PER_SECOND=0 SAFEGRID_METRICS_LISTEN=off \
  "$bin" serve --dev --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
# Ready: store and audit log usable and the search index caught up with the store.
ready=no
for _ in $(seq 1 600); do
  if curl -fsk "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ready=yes; break; fi
  sleep 0.1
done
if [ "$ready" != yes ]; then
  echo "the broker did not become ready in 60 s" >&2
  cat "$work/serve.err" >&2
  exit 1
fi
token=$("$bin" token --data-dir "$work/data" --sub ci-schemathesis --role street_officer --jurisdiction 110105001)

export REQUESTS_CA_BUNDLE="$work/data/dev/tls-cert.pem"
"$venv/bin/schemathesis" run "https://localhost:$port/openapi.json" \
  --header "Authorization: Bearer $token" \
  --header "X-Purpose: routine_visit" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-25}" \
  --tls-verify "$work/data/dev/tls-cert.pem"
