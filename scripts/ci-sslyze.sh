#!/usr/bin/env bash
# TLS hygiene: starts `safegrid serve --dev` (main listener) on a free port, scans it with
# sslyze, and fails on SSL 2/3, TLS 1.0/1.1, or any accepted suite that is not AEAD with
# forward secrecy.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SAFEGRID_CI_VENV:-target/ci-venv}"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check sslyze

cargo build --quiet -p safegrid --bin safegrid
bin="${CARGO_TARGET_DIR:-target}/debug/safegrid"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --dev --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then break; fi
  sleep 0.1
done

"$venv/bin/python" -W ignore -m sslyze --mozilla_config=disable --sslv2 --sslv3 --tlsv1 --tlsv1_1 --tlsv1_2 --tlsv1_3 --json_out="$work/scan.json" "127.0.0.1:$port" >"$work/sslyze.out" 2>&1 || { tail -20 "$work/sslyze.out"; exit 1; }
"$venv/bin/python" - "$work/scan.json" <<'PY'
import json, sys
scan = json.load(open(sys.argv[1]))
result = scan["server_scan_results"][0]
if result.get("scan_status") != "COMPLETED":
    sys.exit(f"sslyze could not scan: {result.get('connectivity_error_trace')}")
commands = result["scan_result"]
bad = []
for name in ["ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites", "tls_1_1_cipher_suites"]:
    attempt = commands[name]
    if attempt.get("result") is None:
        # sslyze could not run this probe (e.g. no legacy SSL support in its build); rustls
        # has no code for SSL 2/3 at all, so only TLS 1.0/1.1 must be probed successfully.
        if name.startswith("tls_"):
            bad.append(f"{name}: probe failed ({attempt.get('status')})")
        continue
    accepted = attempt["result"]["accepted_cipher_suites"]
    if accepted:
        bad.append(f"{name}: {len(accepted)} suites accepted")
strong = ("ECDHE", "DHE")
for name in ["tls_1_2_cipher_suites", "tls_1_3_cipher_suites"]:
    for suite in commands[name]["result"]["accepted_cipher_suites"]:
        suite_name = suite["cipher_suite"]["name"]
        aead = "GCM" in suite_name or "CHACHA20_POLY1305" in suite_name
        forward_secret = name == "tls_1_3_cipher_suites" or any(k in suite_name for k in strong)
        if not (aead and forward_secret):
            bad.append(f"{name}: weak suite {suite_name}")
if bad:
    sys.exit("TLS hygiene failed:\n  " + "\n  ".join(bad))
print("sslyze: only TLS 1.2/1.3 with AEAD, forward-secret suites")
PY
