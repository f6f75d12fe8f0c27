#!/usr/bin/env bash
# Crash campaign (issue 20 item 1): `bluegreen run` SIGKILLed at N points drawn at random
# (copy's data phase and index builds, sync's catch-up, sync between a group's main commit
# and its prepared parts, verify holding the applier, every cutover step) or `bluegreen
# rollback` after any of its steps, writes between, the same command again, then independent checks
# (psql digests of every table on both sides, no prepared transaction, no orphan slot or
# origin, traffic on green only). The test binary is crates/cli/tests/crash_campaign.rs
# (CI runs 5 points of it with the other tests).
#   scripts/crash-campaign.sh [N=20] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
points="${1:-20}"
seed="${2:-}"
export CRASH_POINTS="$points"
export CRASH_SEED="${seed:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}"
log=$(mktemp /tmp/crash-campaign.XXXXXX)
started=$(date +%s)
if cargo test -q -p bluegreen --test crash_campaign -- --nocapture >"$log" 2>&1; then
  result="all $points point(s) exact"
  rc=0
else
  result="FAILED (see $log)"
  rc=1
fi
grep -a -E '^crash campaign|^point .*(exact|ended)' "$log" || true
grep -a -A15 'panicked at' "$log" | head -30 || true
echo "result: $result in $(( $(date +%s) - started )) s"
[ "$rc" = 0 ] && rm -f "$log"
exit "$rc"
