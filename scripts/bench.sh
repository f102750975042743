#!/usr/bin/env bash
# Benchmarks (`just bench`). Each writes bench/results/<name>.json and a line to
# bench/results/summary.md. They run on this machine's loopback only.
#
#   scripts/bench.sh [releases-list] ...     (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
results="$root/bench/results"
mkdir -p "$results"
tools="$(scripts/test-tools.sh bench)"
scripts/ensure-services.sh

echo "==> building the release binary"
cargo build --release --locked -p release-pilot >&2
binary="$root/target/release/release-pilot"

work="$(mktemp -d)"
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Ten distinct free ports, held open together while chosen.
read -r -a ports <<<"$(python3 -c '
import socket
held = [socket.socket() for _ in range(10)]
for s in held: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))')"
http=${ports[8]}; gateway_admin=${ports[9]}
base="http://127.0.0.1:$http"
password="bench-admin-password"

# Starts the whole system on PostgreSQL (database $1) + JetStream, with limits raised so the
# rate limiter is not what is measured.
start_system() {
  local database="$1"
  psql -h 127.0.0.1 -U postgres -d postgres -q -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database"
  env -i PATH="$PATH" HOME="$work" RP_DATA_DIR="$work/data" \
    RP_DATABASE__URL="postgres://postgres@127.0.0.1:5432/$database" \
    RP_NATS__URL=nats://127.0.0.1:4222 RP_NATS__STREAM="RP_BENCH_$database" RP_NATS__SUBJECT_PREFIX="$database." \
    RP_GATEWAY__HTTP_ADDR="127.0.0.1:$http" RP_GATEWAY__ADMIN_ADDR="127.0.0.1:$gateway_admin" \
    RP_AUTH__GRPC_ADDR="127.0.0.1:${ports[0]}" RP_AUTH__ADMIN_ADDR="127.0.0.1:${ports[1]}" \
    RP_RELEASE__GRPC_ADDR="127.0.0.1:${ports[2]}" RP_RELEASE__ADMIN_ADDR="127.0.0.1:${ports[3]}" \
    RP_ROLLBACK__GRPC_ADDR="127.0.0.1:${ports[4]}" RP_ROLLBACK__ADMIN_ADDR="127.0.0.1:${ports[5]}" \
    RP_NOTIFIER__GRPC_ADDR="127.0.0.1:${ports[6]}" RP_NOTIFIER__ADMIN_ADDR="127.0.0.1:${ports[7]}" \
    RP_AUTH__BOOTSTRAP_ADMIN__EMAIL=admin@example.com RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD="$password" \
    RP_GATEWAY__RATE_LIMIT__PER_IP_PER_SECOND=1000000 RP_GATEWAY__RATE_LIMIT__PER_IP_BURST=1000000 \
    RP_GATEWAY__RATE_LIMIT__PER_TOKEN_PER_SECOND=1000000 RP_GATEWAY__RATE_LIMIT__PER_TOKEN_BURST=1000000 \
    RP_TELEMETRY__LOG_FILTER=warn \
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
  local app_id; app_id="$(curl -fsS "$base/api/v1/apps/bench" -H "authorization: Bearer $token" | python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])')"

  # Warm up, then the SLO run at 1,000 req/s and the saturation run.
  BASE="$base" TOKEN="$token" "$tools/k6" run --quiet --no-usage-report -e MODE=rate -e RATE=200 -e DURATION=5s k6/releases-list.js >/dev/null
  BASE="$base" TOKEN="$token" "$tools/k6" run --quiet --no-usage-report -e MODE=rate -e RATE=1000 -e DURATION=30s \
    --summary-export "$work/rate.json" k6/releases-list.js >/dev/null
  read -r p50 p95 p99 rate failures <<<"$(k6_stats "$work/rate.json")"
  BASE="$base" TOKEN="$token" "$tools/k6" run --quiet --no-usage-report -e MODE=saturation -e VUS=32 -e DURATION=20s \
    --summary-export "$work/saturation.json" k6/releases-list.js >/dev/null
  read -r sat_p50 sat_p95 sat_p99 sat_rate sat_failures <<<"$(k6_stats "$work/saturation.json")"

  # The denominator: pgbench running the same query on the same database.
  cat >"$work/releases.sql" <<SQL
SELECT id, app_id, version, artifact_image, artifact_digest, commits, changelog, bump, first_commit_at, created_by, created_at
  FROM release.releases WHERE app_id = '$app_id' ORDER BY id DESC LIMIT 51;
SQL
  local pgbench_tps
  pgbench_tps="$(pgbench -h 127.0.0.1 -U postgres -n -c 32 -j 2 -T 20 -f "$work/releases.sql" rp_bench_releases 2>/dev/null \
    | awk '/^tps/ {print $3; exit}')"
  stop_system
  local ratio; ratio="$(python3 -c "print(f'{$sat_rate / $pgbench_tps:.2f}')")"
  cat >"$results/releases-list.json" <<JSON
{
  "benchmark": "releases-list",
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "machine": "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB",
  "at_1000_rps": {"achieved_rps": $rate, "p50_ms": $p50, "p95_ms": $p95, "p99_ms": $p99, "failed_checks": $failures},
  "saturation": {"vus": 32, "rps": $sat_rate, "p50_ms": $sat_p50, "p99_ms": $sat_p99, "failed_checks": $sat_failures},
  "pgbench_same_query_tps": $pgbench_tps,
  "saturation_over_pgbench": $ratio,
  "targets": {"p99_ms_at_1000_rps": 20, "saturation_over_pgbench": 0.5}
}
JSON
  echo "| $(date -u +%F) | releases-list | 1000 rps: p50 ${p50} ms, p95 ${p95} ms, p99 ${p99} ms (achieved ${rate}/s) | saturation ${sat_rate}/s vs pgbench ${pgbench_tps} tps = ${ratio} |" >>"$results/summary.md"
  cat "$results/releases-list.json"
}

benchmarks=("$@")
[ ${#benchmarks[@]} -eq 0 ] && benchmarks=(releases-list)
for name in "${benchmarks[@]}"; do
  case "$name" in
    releases-list) bench_releases_list ;;
    *) echo "unknown benchmark $name" >&2; exit 1 ;;
  esac
done
