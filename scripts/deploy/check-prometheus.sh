#!/usr/bin/env bash
# Checks the Prometheus alerting rules (promtool check rules) and runs their unit tests
# (promtool test rules). promtool comes with the Debian package `prometheus`, which
# scripts/setup.sh installs. Run by scripts/test.sh; exits 1 when a rule or test fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v promtool >/dev/null 2>&1 || { echo "check-prometheus: promtool is missing (scripts/setup.sh installs the prometheus package)" >&2; exit 2; }
promtool check rules scripts/deploy/prometheus/alerts.yml
promtool test rules scripts/deploy/prometheus/tests/alerts_test.yml
