#!/usr/bin/env bash
# Bounded memory without TTL (DESIGN.md §5, docs/state-layout.md "Bounded memory"): replays a
# churning synthetic recording (new intent ids and blades keep appearing, old ones go idle;
# `lattice gen --churn`) without TTL rules, once without a memory budget and once with
# `--memory-budget BUDGET`, printing every EVERY shards RocksDB's live data size, the process RSS,
# the trie nodes in memory and the pages paged out / read back, from `lattice replay --progress`
# lines on stderr; then each run's CPU time and peak RSS, and the ratio of the CPU times.
#
#   bench/memory_budget.sh [BUILD_DIR]   SHARDS=5000000 EVERY=1000000 BUDGET=256MiB
#                                        RUNS="no-budget budget"
#
# Expected: without a budget nodes and RSS grow with the number of paths seen; with one, nodes
# stay near BUDGET / 300 bytes plus one stub per page (the page roots, `intents.<id>` and
# `nodes.<name>`, stay in memory), so RSS grows only with the pages. The dumps of both states are
# compared at the end (they must be equal). Runtime: a few minutes per run at 5 M shards on an
# idle 2-core machine; SHARDS=1000000 EVERY=200000 for a quick look.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
shards=${SHARDS:-5000000}
every=${EVERY:-1000000}
budget=${BUDGET:-256MiB}
lattice="$build/cli/lattice"
[ -x "$lattice" ] || { echo "memory_budget.sh: $lattice not found; build first" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-memory-budget.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# shellcheck source=bench/churn_lib.sh
. "$root/bench/churn_lib.sh"

run() {
  churn_run "$1" 'pages_out=$17 pages_in=$19' "${@:2}"
  "$lattice" state dump --state "$tmp/$1" | md5sum | awk '{print $1}' >"$tmp/$1.md5"
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
labels=()
for r in ${RUNS:-no-budget budget}; do
  case "$r" in
    no-budget) run no-budget ;;
    budget) run budget --memory-budget "$budget" ;;
    *) echo "memory_budget.sh: unknown run '$r'" >&2; exit 1 ;;
  esac
  labels+=("$r")
done
if [ -f "$tmp/no-budget.time" ] && [ -f "$tmp/budget.time" ]; then
  awk 'FNR==1 {cpu[FILENAME]=$3+$6} END {
         a=cpu[ARGV[1]]; b=cpu[ARGV[2]];
         if (a > 0) printf "CPU (user+system): budget / no budget = %.2f\n", b/a }' \
    "$tmp/no-budget.time" "$tmp/budget.time"
  if cmp -s "$tmp/no-budget.md5" "$tmp/budget.md5"; then
    echo "dumps: equal"
  else
    echo "dumps: DIFFERENT" >&2
    exit 1
  fi
fi
