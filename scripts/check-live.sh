#!/usr/bin/env bash
# Runs a real release-pilot (embedded mode, throwaway data directory) and points third-party
# clients at it: grpcurl lists every service through reflection (v1alpha) and calls the gRPC
# health service; schemathesis fuzzes the HTTP API against its own OpenAPI document.
#
#   scripts/check-live.sh [path/to/release-pilot]     (default: target/debug/release-pilot)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
binary="${1:-target/debug/release-pilot}"
[ -x "$binary" ] || { echo "check-live: $binary is not built" >&2; exit 1; }
tools="$(scripts/test-tools.sh)"

work="$(mktemp -d)"
# Twelve distinct free ports, chosen while all are held open so none repeats.
read -r -a ports <<<"$(python3 -c '
import socket
held = [socket.socket() for _ in range(12)]
for s in held: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))')"
declare -A grpc admin
i=0
for role in auth release rollback notifier; do grpc[$role]=${ports[$i]}; admin[$role]=${ports[$((i + 1))]}; i=$((i + 2)); done
http=${ports[8]}; gateway_admin=${ports[9]}
# The router role too: its defaults (8000, 9105) may be taken on this machine.
router_proxy=${ports[10]}; router_admin=${ports[11]}
password="check-live-admin-password"

env -i PATH="$PATH" HOME="$work" \
  RP_DATA_DIR="$work/data" \
  RP_GATEWAY__HTTP_ADDR="127.0.0.1:$http" RP_GATEWAY__ADMIN_ADDR="127.0.0.1:$gateway_admin" \
  RP_AUTH__GRPC_ADDR="127.0.0.1:${grpc[auth]}" RP_AUTH__ADMIN_ADDR="127.0.0.1:${admin[auth]}" \
  RP_RELEASE__GRPC_ADDR="127.0.0.1:${grpc[release]}" RP_RELEASE__ADMIN_ADDR="127.0.0.1:${admin[release]}" \
  RP_ROLLBACK__GRPC_ADDR="127.0.0.1:${grpc[rollback]}" RP_ROLLBACK__ADMIN_ADDR="127.0.0.1:${admin[rollback]}" \
  RP_NOTIFIER__GRPC_ADDR="127.0.0.1:${grpc[notifier]}" RP_NOTIFIER__ADMIN_ADDR="127.0.0.1:${admin[notifier]}" \
  RP_ROUTER__PROXY_ADDR="127.0.0.1:$router_proxy" RP_ROUTER__ADMIN_ADDR="127.0.0.1:$router_admin" \
  RP_AUTH__BOOTSTRAP_ADMIN__EMAIL=admin@example.com RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD="$password" \
  RP_GATEWAY__RATE_LIMIT__PER_IP_PER_SECOND=100000 RP_GATEWAY__RATE_LIMIT__PER_IP_BURST=100000 \
  RP_GATEWAY__RATE_LIMIT__PER_TOKEN_PER_SECOND=100000 RP_GATEWAY__RATE_LIMIT__PER_TOKEN_BURST=100000 \
  RP_AUTH__THROTTLE__MAX_FAILURES_PER_ACCOUNT=100000 RP_AUTH__THROTTLE__MAX_FAILURES_PER_IP=100000 \
  RP_TELEMETRY__LOG_FILTER=warn \
  "$binary" serve >"$work/server.log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$gateway_admin/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$gateway_admin/ready" >/dev/null || { cat "$work/server.log"; echo "check-live: release-pilot did not become ready" >&2; exit 1; }

echo "--- grpcurl: reflection and health on every service"
declare -A names=([auth]=releasepilot.auth.v1.AuthService [release]=releasepilot.release.v1.ReleaseService \
  [rollback]=releasepilot.rollback.v1.RollbackService [notifier]=releasepilot.notifier.v1.NotifierService)
for role in auth release rollback notifier; do
  listed="$("$tools/grpcurl" -plaintext "127.0.0.1:${grpc[$role]}" list)"
  grep -qx "${names[$role]}" <<<"$listed" || { echo "$listed"; echo "check-live: $role does not list ${names[$role]}" >&2; exit 1; }
  grep -qx "grpc.health.v1.Health" <<<"$listed" || { echo "check-live: $role does not list grpc.health.v1.Health" >&2; exit 1; }
  "$tools/grpcurl" -plaintext "127.0.0.1:${grpc[$role]}" describe "${names[$role]}" >/dev/null
  status="$("$tools/grpcurl" -plaintext -d "{\"service\":\"${names[$role]}\"}" "127.0.0.1:${grpc[$role]}" grpc.health.v1.Health/Check)"
  grep -q '"SERVING"' <<<"$status" || { echo "$status"; echo "check-live: $role is not SERVING" >&2; exit 1; }
  echo "$role: ${names[$role]} listed, described and SERVING"
done
# A real call through reflection: the public JWKS.
"$tools/grpcurl" -plaintext "127.0.0.1:${grpc[auth]}" releasepilot.auth.v1.AuthService/GetJwks | grep -q jwksJson

echo "--- schemathesis: the HTTP API against its OpenAPI document"
token="$(curl -fsS "http://127.0.0.1:$http/api/v1/auth/login" -H 'content-type: application/json' \
  -d "{\"email\":\"admin@example.com\",\"password\":\"$password\"}" | python3 -c 'import sys,json; print(json.load(sys.stdin)["access_token"])')"
(cd "$work" && "$tools/st" --config-file "$repo/scripts/schemathesis.toml" run "http://127.0.0.1:$http/api/openapi.json" --checks all \
  -H "Authorization: Bearer $token" --max-examples "${SCHEMATHESIS_EXAMPLES:-100}" --seed 1 --no-color \
  --output-sanitize true)
echo "check-live: ok"
