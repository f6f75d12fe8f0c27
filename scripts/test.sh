#!/usr/bin/env bash
# Sets up and runs every test: unit tests, and integration tests against real throwaway
# PostgreSQL 15 clusters and PgBouncer processes on 127.0.0.1 (started by the testkit crate),
# the Kubernetes manifests against their schemas (scripts/deploy/check-k8s.sh, ~1 s), and the
# Prometheus alerting rules through promtool check and test (scripts/deploy/check-prometheus.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/deploy/check-k8s.sh
scripts/deploy/check-prometheus.sh
cargo test --workspace --locked "$@"
