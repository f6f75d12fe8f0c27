#!/usr/bin/env bash
# Sets up and runs every test: unit tests, and integration tests against real throwaway
# PostgreSQL 15 clusters and PgBouncer processes on 127.0.0.1 (started by the testkit crate).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --locked "$@"
