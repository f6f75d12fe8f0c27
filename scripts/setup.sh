#!/usr/bin/env bash
# Installs what bluegreen's tests, demo and benchmarks need when it is missing:
# PostgreSQL 15 server binaries, PgBouncer, openssl (test certificates), promtool (the
# Debian package prometheus: checks and unit-tests scripts/deploy/prometheus/alerts.yml).
# Usage: scripts/setup.sh [--bench]   (--bench adds pgcopydb and /usr/bin/time)
set -euo pipefail

need=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
[ -x /usr/lib/postgresql/15/bin/psql ] || need+=(postgresql-client-15)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ "${1:-}" = "--bench" ]; then
  command -v pgcopydb >/dev/null 2>&1 || need+=(pgcopydb)
  [ -x /usr/bin/time ] || need+=(time)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The servers run as the postgres OS user when we are root (postgres refuses root).
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "setup: the postgres OS user is missing; install postgresql-15 from apt" >&2
  exit 2
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is missing (install Rust)" >&2; exit 2; }
