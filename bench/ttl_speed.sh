#!/usr/bin/env bash
# Replay speed with TTL rules against replay without them, in the same run on the same file
# (issue 3: within 20%).
#
#   bench/ttl_speed.sh [BUILD_DIR]      SHARDS=2000000 ROUNDS=3 (environment)
#
# Writes `lattice gen --shards SHARDS --blades 64 --seed 7` (the recording bench/replay.sh uses)
# and replays it into a fresh state directory ROUNDS times each way, alternating, with the rules
# intents.*=1h, nodes.*.msg=10m and scrape.*=1h (they match most of what the recording writes,
# so every intent, node message and counter is tracked). Prints the CPU time (user + system) of
# each replay process and the ratio of the medians; CPU time, because wall time on a shared
# machine measures the neighbours.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
shards=${SHARDS:-2000000}
rounds=${ROUNDS:-3}
lattice="$build/cli/lattice"
[ -x "$lattice" ] || { echo "ttl_speed.sh: $lattice not found; build first" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-ttl-speed.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$lattice" gen --shards "$shards" --blades 64 --seed 7 -o "$tmp/rec.ndjson"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $shards shards"

cpu() {  # prints user+system seconds of one replay
  rm -rf "$tmp/state"
  /usr/bin/time -f "%U %S" -o "$tmp/time" "$lattice" replay "$tmp/rec.ndjson" --state "$tmp/state" \
    "$@" >/dev/null
  awk '{printf "%.2f\n", $1 + $2}' "$tmp/time"
}

plain=()
ttl=()
for ((i = 0; i < rounds; i++)); do
  plain+=("$(cpu)")
  ttl+=("$(cpu --ttl 'intents.*=1h' --ttl 'nodes.*.msg=10m' --ttl 'scrape.*=1h')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mp=$(median "${plain[@]}")
mt=$(median "${ttl[@]}")
echo "replay without TTL rules: CPU s ${plain[*]} (median $mp)"
echo "replay with TTL rules:    CPU s ${ttl[*]} (median $mt)"
awk -v a="$mt" -v b="$mp" 'BEGIN {
  r = a / b; printf "ratio with/without: %.3f (target <= 1.20): %s\n", r, (r <= 1.2 ? "met" : "missed") }'
