#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432) and NATS with JetStream (127.0.0.1:4222) answer,
# starting them with the machine's standard commands when they do not. Fails loudly otherwise.
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
# The inner script is single-quoted on purpose: $line belongs to the child bash.
# shellcheck disable=SC2016
nats_info() { timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222 && IFS= read -r line <&3 && echo "$line"' 2>/dev/null || true; }
nats_up() { nats_info | grep -q '"jetstream":true'; }
wait_for() { for _ in $(seq 1 30); do "$@" && return 0; sleep 1; done; return 1; }
die() { echo "ensure-services: $*" >&2; exit 1; }

command -v pg_isready >/dev/null || die "pg_isready (PostgreSQL client) is not installed"
if ! pg_up; then
  echo "PostgreSQL does not answer on 127.0.0.1:5432; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  wait_for pg_up || die "PostgreSQL does not answer on 127.0.0.1:5432"
fi
if ! nats_up; then
  echo "NATS with JetStream does not answer on 127.0.0.1:4222; starting it"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
  wait_for nats_up || die "NATS with JetStream does not answer on 127.0.0.1:4222"
fi
echo "PostgreSQL and NATS JetStream answer"
