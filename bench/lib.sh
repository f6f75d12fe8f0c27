# Shared by the bench scripts (sourced, not run): the build, a private work directory and the
# throwaway servers. The script sets `root` (the checkout), `keep` (0/1) and, before
# bench_servers, the `settings` array of server settings.
# shellcheck shell=bash

pgbin=/usr/lib/postgresql/15/bin
PSQL="$pgbin/psql -X -q -v ON_ERROR_STOP=1"
now() { date +%s.%N; }
# The machine, as the results name it.
bench_machine() { echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1024/1024}' /proc/meminfo) memory"; }

# Sets `built`: BENCH_BIN (a directory with prebuilt bluegreen, bg-fixture, bg-servers), or a
# fresh release build.
bench_build() {
  if [ -n "${BENCH_BIN:-}" ]; then
    built=$BENCH_BIN
  else
    echo "== building (release)"
    cargo build --release --locked -q -p bluegreen -p fixtures -p testkit
    built=${CARGO_TARGET_DIR:-$root/target}/release
  fi
}

# bench_workdir NAME: `work` (removed at exit unless --keep or a failure), `bin` (a private
# copy of the binaries: other engineers build into the same target directory), `bg_version`
# (BENCH_VERSION, or the commit, marked when crates/ has uncommitted changes). Sets the exit
# trap; a script names the step at hand in `current` for the failure message.
bench_workdir() {
  bench_name=$1
  work=$(mktemp -d "/tmp/bluegreen-bench-$1.XXXXXX")
  mkdir -p "$work/bin"
  cp "$built/bluegreen" "$built/bg-fixture" "$built/bg-servers" "$work/bin/"
  bin=$work/bin
  if [ -n "${BENCH_VERSION:-}" ]; then
    bg_version=$BENCH_VERSION
  else
    bg_version=$(git rev-parse --short HEAD)
    git diff --quiet HEAD -- crates Cargo.lock || bg_version="$bg_version+uncommitted changes"
  fi
  servers_pid=""
  current=""
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local code=$?
  [ "$code" != 0 ] && [ -n "$current" ] && echo "$bench_name.sh: $current failed (exit $code)" >&2
  jobs -p | xargs -r kill 2>/dev/null || true
  sleep 0.5
  # Kept work keeps the pooler's log too (it lives in the servers' directory, gone with them).
  if { [ "$keep" = 1 ] || [ "$code" != 0 ]; } && [ -n "${POOLER_DATABASES_FILE:-}" ]; then
    cp "$(dirname "$POOLER_DATABASES_FILE")/pgbouncer.log" "$work/" 2>/dev/null || true
  fi
  [ -n "$servers_pid" ] && kill "$servers_pid" 2>/dev/null || true
  if [ "$keep" = 1 ] || [ "$code" != 0 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}

# Starts the servers (testkit's bg-servers with its flags "$@", then "${settings[@]}"), kept
# up until the script ends, and reads their ports and password from the env file it writes.
bench_servers() {
  mkfifo "$work/hold"
  # BENCH_SERVERS_ARGS: more bg-servers flags, e.g. "--source-rtt-ms 20" (a WAN to blue).
  # shellcheck disable=SC2086
  "$bin/bg-servers" "$work/env" "$@" ${BENCH_SERVERS_ARGS:-} "${settings[@]}" <"$work/hold" >"$work/servers.log" 2>&1 &
  servers_pid=$!
  exec 3>"$work/hold"
  for _ in $(seq 1 600); do [ -f "$work/env" ] && break; sleep 0.1; done
  [ -f "$work/env" ] || { echo "servers did not start" >&2; cat "$work/servers.log" >&2; exit 2; }
  # shellcheck disable=SC1091
  . "$work/env"
}
