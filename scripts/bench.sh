#!/usr/bin/env bash
# Benchmarks (`just bench`). Each writes bench/results/<name>.json and a line to
# bench/results/summary.md. They run on this machine's loopback only.
#
#   scripts/bench.sh [releases-list|reaction|router|scale|notify] ...     (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
results="$root/bench/results"
mkdir -p "$results"
tools="$(scripts/test-tools.sh bench)"
scripts/ensure-services.sh

echo "==> building the release binaries"
cargo build --release --locked -p release-pilot -p rp-bench -p demo-app >&2
binary="$root/target/release/release-pilot"
bench="$root/target/release/rp-bench"

work="$(mktemp -d)"
server=""
pids=()
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Twelve distinct free ports, held open together while chosen.
read -r -a ports <<<"$(python3 -c '
import socket
held = [socket.socket() for _ in range(12)]
for s in held: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))')"
http=${ports[8]}; gateway_admin=${ports[9]}
base="http://127.0.0.1:$http"
password="bench-admin-password"

# BENCH_IN_PROCESS_CALLS=false: the gateway calls the services over loopback gRPC even though
# they run in its process (the default calls them in memory, see docs/architecture.md).
in_process_calls="${BENCH_IN_PROCESS_CALLS:-true}"

# Starts the whole system on PostgreSQL (database $1) + JetStream, with limits raised so the
# rate limiter is not what is measured.
start_system() {
  local database="$1"
  psql -h 127.0.0.1 -U postgres -d postgres -q -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database"
  env -i PATH="$PATH" HOME="$work" RP_DATA_DIR="$work/data" \
    RP_DATABASE__URL="postgres://postgres@127.0.0.1:5432/$database?sslmode=disable" \
    RP_NATS__URL=nats://127.0.0.1:4222 RP_NATS__STREAM="RP_BENCH_$database" RP_NATS__SUBJECT_PREFIX="$database." \
    RP_GATEWAY__HTTP_ADDR="127.0.0.1:$http" RP_GATEWAY__ADMIN_ADDR="127.0.0.1:$gateway_admin" \
    RP_AUTH__GRPC_ADDR="127.0.0.1:${ports[0]}" RP_AUTH__ADMIN_ADDR="127.0.0.1:${ports[1]}" \
    RP_RELEASE__GRPC_ADDR="127.0.0.1:${ports[2]}" RP_RELEASE__ADMIN_ADDR="127.0.0.1:${ports[3]}" \
    RP_ROLLBACK__GRPC_ADDR="127.0.0.1:${ports[4]}" RP_ROLLBACK__ADMIN_ADDR="127.0.0.1:${ports[5]}" \
    RP_NOTIFIER__GRPC_ADDR="127.0.0.1:${ports[6]}" RP_NOTIFIER__ADMIN_ADDR="127.0.0.1:${ports[7]}" \
    RP_ROUTER__PROXY_ADDR="127.0.0.1:${ports[10]}" RP_ROUTER__ADMIN_ADDR="127.0.0.1:${ports[11]}" \
    RP_AUTH__BOOTSTRAP_ADMIN__EMAIL=admin@example.com RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD="$password" \
    RP_GATEWAY__RATE_LIMIT__PER_IP_PER_SECOND=1000000 RP_GATEWAY__RATE_LIMIT__PER_IP_BURST=1000000 \
    RP_GATEWAY__RATE_LIMIT__PER_TOKEN_PER_SECOND=1000000 RP_GATEWAY__RATE_LIMIT__PER_TOKEN_BURST=1000000 \
    RP_GATEWAY__IN_PROCESS_CALLS="$in_process_calls" RP_TELEMETRY__LOG_FILTER=warn \
    "$binary" serve >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$gateway_admin/ready" >/dev/null 2>&1 && return 0; sleep 0.2; done
  cat "$work/server.log"; echo "bench: release-pilot did not become ready" >&2; exit 1
}

stop_system() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; server=""; }

login() {
  curl -fsS "$base/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"admin@example.com\",\"password\":\"$password\"}" | python3 -c 'import sys,json; print(json.load(sys.stdin)["access_token"])'
}

k6_stats() {
  # prints: p50 p95 p99 rps failures
  python3 - "$1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
d = m["http_req_duration"]
reqs = m["http_reqs"]
failed = m.get("checks", {}).get("fails", 0)
print(f'{d["med"]:.2f} {d["p(95)"]:.2f} {d["p(99)"]:.2f} {reqs["rate"]:.1f} {failed}')
PY
}

bench_releases_list() {
  echo "==> releases-list: GET /api/v1/releases?app=… (page of 50) through gateway → gRPC → release → PostgreSQL"
  start_system rp_bench_releases
  local token; token="$(login)"
  curl -fsS "$base/api/v1/apps" -H "authorization: Bearer $token" -H 'content-type: application/json' -d '{"name":"bench"}' >/dev/null
  for i in $(seq 1 200); do
    curl -fsS "$base/api/v1/apps/bench/releases" -H "authorization: Bearer $token" -H 'content-type: application/json' \
      -d "{\"version\":\"1.0.$i\",\"commits\":[{\"sha\":\"$(printf '%040d' "$i")\",\"message\":\"fix: change $i\",\"author\":\"bench\"}]}" >/dev/null
  done

  # Fresh statistics, as autovacuum would have them on a database in use (both sides use them).
  psql -h 127.0.0.1 -U postgres -d rp_bench_releases -q -c "ANALYZE"
  # Warm up, then the SLO run at 1,000 req/s and the saturation run.
  BASE="$base" TOKEN="$token" "$tools/k6" run --quiet --no-usage-report -e MODE=rate -e RATE=200 -e DURATION=5s k6/releases-list.js >/dev/null
  BASE="$base" TOKEN="$token" "$tools/k6" run --quiet --no-usage-report -e MODE=rate -e RATE=1000 -e DURATION=30s \
    --summary-export "$work/rate.json" k6/releases-list.js >/dev/null
  read -r p50 p95 p99 rate failures <<<"$(k6_stats "$work/rate.json")"
  # BENCH_PROFILE=<file>: record the server's call graphs for 8 s of the saturation run (perf;
  # the run's figures are then not a measurement). Read it with `perf report -i <file> --children`.
  if [ -n "${BENCH_PROFILE:-}" ]; then
    (sleep 5; perf record -F 499 --call-graph dwarf,16384 -p "$server" -o "$BENCH_PROFILE" -- sleep 8 >/dev/null 2>&1) &
  fi
  BASE="$base" TOKEN="$token" "$tools/k6" run --quiet --no-usage-report -e MODE=saturation -e VUS=32 -e DURATION=20s \
    --summary-export "$work/saturation.json" k6/releases-list.js >/dev/null
  read -r sat_p50 sat_p95 sat_p99 sat_rate sat_failures <<<"$(k6_stats "$work/saturation.json")"
  # The same saturation from wrk, a C load generator like pgbench: k6 spends about 0.16 ms of
  # CPU per request on the same 2 cores, which caps what it can measure.
  need_wrk
  local wrk_rate wrk_p50 wrk_p99 wrk_non_2xx
  read -r wrk_rate wrk_p50 wrk_p99 wrk_non_2xx <<<"$(wrk_run "$base/api/v1/releases?app=bench&page_size=50" 20 32 \
    -H "authorization: Bearer $token")"
  if [ "$wrk_non_2xx" != 0 ]; then echo "bench: $wrk_non_2xx wrk requests did not answer 2xx" >&2; exit 1; fi

  # The denominator: pgbench running the same query on the same database.
  cat >"$work/releases.sql" <<SQL
SELECT id, app_id, version, artifact_image, artifact_digest, commit_count, bump, created_by, created_at
  FROM release.releases WHERE app_id = (SELECT id FROM release.apps WHERE name = 'bench') ORDER BY id DESC LIMIT 51;
SQL
  local pgbench_tps
  pgbench_tps="$(PGSSLMODE=disable pgbench -h 127.0.0.1 -U postgres -n -c 32 -j 2 -T 20 -f "$work/releases.sql" rp_bench_releases 2>/dev/null \
    | awk '/^tps/ {print $3; exit}')"

  # Where the time goes, same 32 connections, 10 s each (see docs/benchmarks.md, "A ceiling"):
  # - the gateway's HTTP pipeline alone: an unknown /api path passes every middleware and
  #   answers 404 problem+json without calling a service;
  # - a page of one release: the fixed cost of the call, the release service and one database
  #   round trip, with almost no rows to carry;
  # - pgbench with prepared statements (as sqlx runs them), for the page of 50 and for 1 row.
  local pipeline_rate page1_rate page1_non_2xx
  read -r pipeline_rate _ _ _ <<<"$(wrk_run "$base/api/v1/no-such-resource" 10 32 -H "authorization: Bearer $token")"
  read -r page1_rate _ _ page1_non_2xx <<<"$(wrk_run "$base/api/v1/releases?app=bench&page_size=1" 10 32 \
    -H "authorization: Bearer $token")"
  if [ "$page1_non_2xx" != 0 ]; then echo "bench: $page1_non_2xx one-row page requests did not answer 2xx" >&2; exit 1; fi
  sed 's/LIMIT 51/LIMIT 2/' "$work/releases.sql" >"$work/release.sql"
  pgbench_prepared() {
    PGSSLMODE=disable pgbench -h 127.0.0.1 -U postgres -n -M prepared -c 32 -j 2 -T 10 -f "$1" rp_bench_releases 2>/dev/null \
      | awk '/^tps/ {print $3; exit}'
  }
  local pg_prepared_page pg_prepared_row
  pg_prepared_page="$(pgbench_prepared "$work/releases.sql")"
  pg_prepared_row="$(pgbench_prepared "$work/release.sql")"
  stop_system
  local ratio; ratio="$(python3 -c "print(f'{$sat_rate / $pgbench_tps:.2f}')")"
  local wrk_ratio; wrk_ratio="$(python3 -c "print(f'{$wrk_rate / $pgbench_tps:.2f}')")"
  cat >"$results/releases-list.json" <<JSON
{
  "benchmark": "releases-list",
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "machine": "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB",
  "gateway_in_process_calls": $in_process_calls,
  "at_1000_rps": {"achieved_rps": $rate, "p50_ms": $p50, "p95_ms": $p95, "p99_ms": $p99, "failed_checks": $failures},
  "saturation": {"vus": 32, "rps": $sat_rate, "p50_ms": $sat_p50, "p95_ms": $sat_p95, "p99_ms": $sat_p99, "failed_checks": $sat_failures},
  "saturation_wrk": {"connections": 32, "rps": $wrk_rate, "p50_ms": $wrk_p50, "p99_ms": $wrk_p99, "non_2xx": $wrk_non_2xx},
  "pgbench_same_query_tps": $pgbench_tps,
  "saturation_over_pgbench": $ratio,
  "saturation_wrk_over_pgbench": $wrk_ratio,
  "decomposition_wrk_32_connections": {
    "gateway_pipeline_only_404_rps": $pipeline_rate,
    "page_of_1_rps": $page1_rate,
    "page_of_50_rps": $wrk_rate,
    "pgbench_prepared_page_of_50_tps": $pg_prepared_page,
    "pgbench_prepared_1_row_tps": $pg_prepared_row
  },
  "targets": {"p99_ms_at_1000_rps": 20, "saturation_over_pgbench": 0.5}
}
JSON
  echo "| $(date -u +%F) | releases-list (gateway in-process calls: $in_process_calls) | 1000 rps: p50 ${p50} ms, p95 ${p95} ms, p99 ${p99} ms (achieved ${rate}/s) | saturation k6 ${sat_rate}/s, wrk ${wrk_rate}/s vs pgbench ${pgbench_tps} tps = ${ratio} (k6), ${wrk_ratio} (wrk); gateway pipeline alone ${pipeline_rate}/s, page of 1 ${page1_rate}/s, pgbench prepared ${pg_prepared_page} (50 rows) / ${pg_prepared_row} (1 row) tps |" >>"$results/summary.md"
  cat "$results/releases-list.json"
}

bench_reaction() {
  echo "==> reaction: failing canary → all traffic on stable, 20 runs per backend, default settings"
  env -i PATH="$PATH" HOME="$work" RP_TELEMETRY__LOG_FILTER=error \
    "$bench" reaction --runs 20 --out "$results/reaction-embedded.json" >/dev/null
  psql -h 127.0.0.1 -U postgres -d postgres -q -c "DROP DATABASE IF EXISTS rp_bench_reaction WITH (FORCE)" -c "CREATE DATABASE rp_bench_reaction"
  env -i PATH="$PATH" HOME="$work" RP_TELEMETRY__LOG_FILTER=error \
    RP_DATABASE__URL=postgres://postgres@127.0.0.1:5432/rp_bench_reaction?sslmode=disable \
    RP_NATS__URL=nats://127.0.0.1:4222 RP_NATS__STREAM=RP_BENCH_REACTION RP_NATS__SUBJECT_PREFIX=rp_bench_reaction. \
    "$bench" reaction --runs 20 --out "$results/reaction-distributed.json" >/dev/null
  local line=""
  for backend in embedded distributed; do
    line+="$(python3 - "$results/reaction-$backend.json" "$backend" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
x, d = r["reaction"], r["crossing_to_decision"]
print(f'{sys.argv[2]}: p50 {x["p50_s"]*1000:.0f} ms, p95 {x["p95_s"]*1000:.0f} ms, max {x["max_s"]*1000:.0f} ms (detection p95 {d["p95_s"]*1000:.0f} ms); ', end="")
PY
)"
  done
  echo "| $(date -u +%F) | rollback reaction (20 runs, target p95 ≤ 1 s) | $line |" >>"$results/summary.md"
  cat "$results/reaction-embedded.json" "$results/reaction-distributed.json"
}

# wrk and nginx (Debian packages), installed when missing.
need_wrk() {
  if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    echo "bench: installing nginx and wrk (Debian packages)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx wrk >/dev/null
  fi
}

# wrk against $1 for $2 seconds with $3 connections (64), further arguments passed on; prints
# "rps p50_ms p99_ms non_2xx".
wrk_run() {
  local url="$1" seconds="$2" connections="${3:-64}"
  shift $(($# < 3 ? $# : 3))
  wrk -t2 -c"$connections" -d"$seconds"s --latency "$@" "$url" | python3 -c '
import re, sys
text = sys.stdin.read()
def ms(label):
    m = re.search(r"^\s*" + label + r"\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
p50, p99 = ms("50%"), ms("99%")
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {errors.group(1) if errors else 0}")'
}

bench_router() {
  echo "==> router vs nginx: same two demo-app upstreams, 90/10 weighted split, wrk -t2 -c64" >&2
  need_wrk
  local v1=${ports[0]} v2=${ports[1]} ng=${ports[2]} rt=${ports[3]} rt_admin=${ports[4]}
  "$root/target/release/demo-app" --version 1.0.0 --port "$v1" 2>/dev/null & pids+=($!)
  "$root/target/release/demo-app" --version 2.0.0 --port "$v2" 2>/dev/null & pids+=($!)
  mkdir -p "$work/nginx/logs"
  cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app {
    server 127.0.0.1:$v1 weight=9;
    server 127.0.0.1:$v2 weight=1;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$ng;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
NGINX
  nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' & local nginx_pid=$!; pids+=("$nginx_pid")
  RP_TELEMETRY__LOG_FILTER=error "$bench" router --listen "127.0.0.1:$rt" --admin "127.0.0.1:$rt_admin" \
    --stable "127.0.0.1:$v1" --canary "127.0.0.1:$v2" --weight 10 2>/dev/null & local router_pid=$!; pids+=("$router_pid")
  for url in "http://127.0.0.1:$ng/" "http://127.0.0.1:$rt/"; do
    for _ in $(seq 1 100); do curl -fsS "$url" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fsS "$url" >/dev/null || { echo "bench: $url does not answer" >&2; exit 1; }
  done
  sleep 2
  local idle_rss; idle_rss="$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$router_pid/status")"
  # The split really is 90/10 through the router.
  local canary; canary="$(for _ in $(seq 1 400); do curl -s -o /dev/null -D - "http://127.0.0.1:$rt/" | { grep -ci '^x-rp-version: 2.0.0' || true; }; done | awk '{s += $1} END {print s + 0}')"
  wrk_run "http://127.0.0.1:$ng/" 3 >/dev/null; wrk_run "http://127.0.0.1:$rt/" 3 >/dev/null
  # CPU time (user + system, clock ticks) of processes, from /proc: the cost per request is
  # what the throughput ratio comes from, and it moves less than rps from one machine to another.
  cpu_ticks() { for pid in "$@"; do sed 's/.*) //' "/proc/$pid/stat"; done | awk '{t += $12 + $13} END {print t}'; }
  local nginx_processes
  mapfile -t nginx_processes < <(echo "$nginx_pid"; pgrep -P "$nginx_pid")
  # µs of CPU per request: ticks before, ticks after, rps over 10 s.
  per_request() { python3 -c "print(f'{($2 - $1) / $(getconf CLK_TCK) / ($3 * 10) * 1e6:.1f}')"; }
  local rounds=()
  for round in 1 2 3 4 5; do
    local before after
    before="$(cpu_ticks "${nginx_processes[@]}")"
    read -r n_rps n_p50 n_p99 n_err <<<"$(wrk_run "http://127.0.0.1:$ng/" 10)"
    after="$(cpu_ticks "${nginx_processes[@]}")"
    local n_cpu; n_cpu="$(per_request "$before" "$after" "$n_rps")"
    before="$(cpu_ticks "$router_pid")"
    read -r r_rps r_p50 r_p99 r_err <<<"$(wrk_run "http://127.0.0.1:$rt/" 10)"
    after="$(cpu_ticks "$router_pid")"
    local r_cpu; r_cpu="$(per_request "$before" "$after" "$r_rps")"
    echo "round $round: nginx $n_rps rps p99 $n_p99 ms ${n_cpu} µs CPU/request | router $r_rps rps p99 $r_p99 ms ${r_cpu} µs CPU/request" >&2
    rounds+=("{\"nginx\": {\"rps\": $n_rps, \"p50_ms\": $n_p50, \"p99_ms\": $n_p99, \"errors\": $n_err, \"cpu_us_per_request\": $n_cpu}, \"router\": {\"rps\": $r_rps, \"p50_ms\": $r_p50, \"p99_ms\": $r_p99, \"errors\": $r_err, \"cpu_us_per_request\": $r_cpu}}")
  done
  local loaded_rss; loaded_rss="$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$router_pid/status")"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()
  python3 - "$results/router-vs-nginx.json" "$idle_rss" "$loaded_rss" "$canary" "$(nginx -v 2>&1 | sed 's/.*nginx\///')" "$(IFS=,; echo "${rounds[*]}")" <<'PY'
import json, statistics, sys, datetime
out, idle, loaded, canary, version, rounds = sys.argv[1:]
rounds = json.loads(f"[{rounds}]")
med = lambda who, key: statistics.median(r[who][key] for r in rounds)
report = {
  "benchmark": "router-vs-nginx", "date": datetime.datetime.utcnow().isoformat() + "Z",
  "setup": "two demo-app upstreams (1.0.0, 2.0.0), 90/10 weighted split, keep-alive to upstreams, wrk -t2 -c64 10 s x 5 alternating rounds, medians",
  "nginx_version": version, "canary_share_of_400_requests_through_router": int(canary) / 400,
  "rounds": rounds,
  "median": {w: {k: med(w, k) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")} for w in ("nginx", "router")},
  "router_idle_rss_mib": float(idle), "router_rss_after_load_mib": float(loaded),
}
report["throughput_ratio_router_over_nginx"] = round(report["median"]["router"]["rps"] / report["median"]["nginx"]["rps"], 3)
report["p99_ratio_router_over_nginx"] = round(report["median"]["router"]["p99_ms"] / report["median"]["nginx"]["p99_ms"], 3)
report["targets"] = {"throughput_ratio": ">= 1.0", "p99": "no worse than nginx"}
json.dump(report, open(out, "w"), indent=2)
m = report["median"]
print(f'| {datetime.date.today()} | router vs nginx {version} (90/10) | router {m["router"]["rps"]:.0f} rps p99 {m["router"]["p99_ms"]:.2f} ms {m["router"]["cpu_us_per_request"]} µs CPU/request; nginx {m["nginx"]["rps"]:.0f} rps p99 {m["nginx"]["p99_ms"]:.2f} ms {m["nginx"]["cpu_us_per_request"]} µs CPU/request; ratio {report["throughput_ratio_router_over_nginx"]} | router idle RSS {idle} MiB |')
PY
  python3 -c "import json; r=json.load(open('$results/router-vs-nginx.json')); print(json.dumps(r['median']))" >&2
}

bench_scale() {
  echo "==> scale: 1,000 canaries at 1 s resolution on one rollback replica (PostgreSQL + JetStream)"
  local database=rp_bench_scale grpc=${ports[5]} admin=${ports[6]}
  psql -h 127.0.0.1 -U postgres -d postgres -q -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database"
  local common=(PATH="$PATH" HOME="$work" RP_DATABASE__URL="postgres://postgres@127.0.0.1:5432/$database?sslmode=disable"
    RP_NATS__URL=nats://127.0.0.1:4222 RP_NATS__STREAM=RP_BENCH_SCALE RP_NATS__SUBJECT_PREFIX="$database.")
  env -i "${common[@]}" RP_ROLLBACK__GRPC_ADDR="127.0.0.1:$grpc" RP_ROLLBACK__ADMIN_ADDR="127.0.0.1:$admin" \
    RP_TELEMETRY__LOG_FILTER=warn "$binary" serve --role rollback >"$work/rollback.log" 2>&1 & local replica=$!; pids+=("$replica")
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break; sleep 0.2; done
  env -i "${common[@]}" "$bench" scale --canaries 1000 --seconds 60 --pid "$replica" \
    --admin "http://127.0.0.1:$admin" --out "$results/scale.json" >/dev/null || { tail -20 "$work/rollback.log"; exit 1; }
  kill "$replica"; wait "$replica" 2>/dev/null || true; pids=()
  python3 - "$results/scale.json" <<'PY' >>"$results/summary.md"
import json, sys, datetime
r = json.load(open(sys.argv[1]))
lag, rss = r["decision_lag_s"], r["rss_mib"]
print(f'| {datetime.date.today()} | rollback scale ({r["canaries"]} canaries, 1 s samples) | CPU {r["cpu_percent_of_one_core"]:.0f}% of a core, RSS {rss["peak"]:.0f} MiB peak | decision lag p50 {lag["p50"]*1000:.0f} ms, p99 {lag["p99"]*1000:.0f} ms; {r["rule_evaluations_per_second"]:.0f} rule evaluations/s |')
PY
  cat "$results/scale.json"
}

bench_notify() {
  echo "==> notify: deployment events → notifier → signed webhook receiver, 1,000 events (PostgreSQL + JetStream)"
  psql -h 127.0.0.1 -U postgres -d postgres -q -c "DROP DATABASE IF EXISTS rp_bench_notify WITH (FORCE)" -c "CREATE DATABASE rp_bench_notify"
  env -i PATH="$PATH" HOME="$work" RP_DATA_DIR="$work/notify" RP_TELEMETRY__LOG_FILTER=warn \
    RP_DATABASE__URL=postgres://postgres@127.0.0.1:5432/rp_bench_notify?sslmode=disable \
    RP_NATS__URL=nats://127.0.0.1:4222 RP_NATS__STREAM=RP_BENCH_NOTIFY RP_NATS__SUBJECT_PREFIX=rp_bench_notify. \
    "$bench" notify --events 1000 --out "$results/notify.json" >/dev/null
  python3 - "$results/notify.json" <<'PY' >>"$results/summary.md"
import json, sys, datetime
r = json.load(open(sys.argv[1]))
l, t = r["latency_ms"], r["throughput"]
print(f'| {datetime.date.today()} | notifier, event → webhook receiver ({r["events"]} events, {r["backend"]["bus"]}, target p99 ≤ 50 ms) | p50 {l["p50"]:.1f} ms, p99 {l["p99"]:.1f} ms, max {l["max"]:.1f} ms ({l["received"]} received) | {t["deliveries_per_second"]:.0f} deliveries/s sustained ({t["received"]} received) |')
PY
  cat "$results/notify.json"
}

benchmarks=("$@")
[ ${#benchmarks[@]} -eq 0 ] && benchmarks=(releases-list reaction router scale notify)
for name in "${benchmarks[@]}"; do
  case "$name" in
    releases-list) bench_releases_list ;;
    reaction) bench_reaction ;;
    router) bench_router >>"$results/summary.md" ;;
    scale) bench_scale ;;
    notify) bench_notify ;;
    *) echo "unknown benchmark $name" >&2; exit 1 ;;
  esac
done
