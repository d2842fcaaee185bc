#!/usr/bin/env bash
# Bounded memory under TTL (issue 3, DESIGN.md §4): replays a churning synthetic recording (new
# intent ids and blades keep appearing, old ones go idle; `lattice gen --churn`) twice, with TTL
# rules and without, printing every EVERY shards RocksDB's live data size
# (rocksdb.estimate-live-data-size over all column families), the process RSS and the number of
# trie nodes, from `lattice replay --progress` lines on stderr. The live data size is the state's
# (families state, counters, history, meta); the change log kept for followers (the last 4096
# commits) is shown apart, as change_log_MB.
#
#   bench/ttl_memory.sh [BUILD_DIR]      SHARDS=20000000 EVERY=1000000 RUNS="with-ttl without-ttl"
#
# The recording is streamed from `lattice gen` into `lattice replay -` (20 M shards would be a
# 2.6 GB file). Event time advances 1 ms per shard, so 20 M shards are 5.5 h of event time; the
# TTL run uses intents.*=10m, nodes.*=10m and --counter-slot-ttl 10m, allowed lateness 1m.
# Expected: with TTL the figures are flat after the first ~1 M shards (10 min of event time);
# without, live data, RSS and nodes grow with the number of intents and blades seen.
# Runtime: a few minutes per run on an idle 2-core machine.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
shards=${SHARDS:-20000000}
every=${EVERY:-1000000}
lattice="$build/cli/lattice"
[ -x "$lattice" ] || { echo "ttl_memory.sh: $lattice not found; build first" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-ttl-memory.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# shellcheck source=bench/churn_lib.sh
. "$root/bench/churn_lib.sh"
ttl=(--ttl 'intents.*=10m' --ttl 'nodes.*=10m' --counter-slot-ttl 10m)

run() {
  churn_run "$1" 'evicted=$11 change_log_MB=$15/1e6' "${@:2}"
  rm -rf "${tmp:?}/$1"
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in ${RUNS:-with-ttl without-ttl}; do
  case "$r" in
    with-ttl) run with-ttl "${ttl[@]}" ;;
    without-ttl) run without-ttl ;;
    *) echo "ttl_memory.sh: unknown run '$r'" >&2; exit 1 ;;
  esac
done
