#!/usr/bin/env bash
# Fuzzes with cargo-fuzz (libFuzzer) for a while: pgoutput (wire's decoder), copybin
# (verify's COPY row splitter), connstr (connection strings and pooler specs, with the rule
# that a parsed password never shows redacted), show_databases (PgBouncer's SHOW DATABASES
# reply as cutover reads it), config (the --config TOML file), or all of them one after another.
#   scripts/fuzz.sh [SECONDS=60] [TARGET=all|pgoutput|copybin|connstr|show_databases|config]
# Installs cargo-fuzz when missing. Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz's -Z flags (sanitizer, coverage) through. Crashes land in fuzz/artifacts/TARGET.
set -euo pipefail

secs="${1:-60}"
target="${2:-all}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cd "$root/fuzz"
if [ "$target" = all ]; then
    for t in pgoutput copybin connstr show_databases config; do "$root/scripts/fuzz.sh" "$secs" "$t"; done
    exit 0
fi
corpus="corpus/$target"
mkdir -p "$corpus"
# Start from the committed seeds (fuzz/seeds/TARGET): pgoutput bytes captured from PostgreSQL 15,
# SHOW DATABASES replies of PgBouncer 1.18, the repository's example config files.
# cargo test replays the same seeds on every run (the CI smoke: crates/cutover/tests/fuzz_seeds.rs,
# crates/cli/tests/fuzz_seeds.rs).
if [ -d "seeds/$target" ]; then
    cp -n "seeds/$target"/* "$corpus"/ 2>/dev/null || true
fi

export RUSTC_BOOTSTRAP=1
# -rss_limit_mb: the decoder must never need much memory, whatever the input.
exec cargo fuzz run "$target" "$corpus" -- \
    -max_total_time="$secs" -max_len=65536 -rss_limit_mb=1024 -print_final_stats=1
