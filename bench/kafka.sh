#!/usr/bin/env bash
# Kafka throughput on the dev broker, against kcat baselines measured in the same run.
#
#   bench/kafka.sh [BUILD_DIR]      (default: build; a Release build of `lattice`)
#
# Environment: SHARDS (default 2000000), PARTITIONS (default 128), ROUNDS (default 5: (c) and
# (a)/(b) standalone are measured in ROUNDS alternating pairs; the ratios are the median of the
# per-round ratios, since the host's speed drifts by 20-40% between minutes).
#
# It starts `lattice broker` (librdkafka's mock cluster, one broker) with topics of PARTITIONS
# partitions — the mock keeps only ~5 MiB / 100,000 message sets per partition, so 2,000,000
# shards (~230 MB of bodies) need at least ~50; 128 leaves room — writes `lattice gen --shards
# SHARDS --blades 64 --seed 7`, and measures:
#   (c)  produce: `kcat -P -K '|'` of the same bodies keyed by blade (the baseline) vs
#        `lattice emit` of the recording (envelopes: key, CreateTime and lattice-seq header per
#        message, every shard validated). Each is timed around the whole process, start to the
#        last delivery report, into its own topic; the message count is checked afterwards.
#   (a)  consume baseline: `kcat -C -e -o beginning` of the whole lattice.shards topic (what
#        `lattice emit` produced) to /dev/null.
#   (b)  `lattice aggregate --exit-at-end` from start to the whole topic merged and durable (a new
#        state directory each time): in standalone mode (`--assign all`, no consumer group, as
#        kcat -C) — the figure the target is judged on — and as a member of a new consumer group
#        (whole process, and from the first assignment), both without a change topic; (b') in
#        standalone mode publishing change events to lattice.changes.
# Rates are shards per second of wall-clock time; user+sys CPU seconds are printed too.
# Targets: (c) lattice emit >= 90% of kcat -P; (b) >= 80% of (a).
# Exit status: 0 when every figure was measured (a missed target is reported, not an error).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
shards=${SHARDS:-2000000}
partitions=${PARTITIONS:-128}
rounds=${ROUNDS:-5}
lattice="$build/cli/lattice"
[ -x "$lattice" ] || { echo "kafka.sh: $lattice not found; build it first" >&2; exit 1; }
for tool in kcat python3; do
  command -v "$tool" >/dev/null || { echo "kafka.sh: needs $tool" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-kafka-bench.XXXXXX")
broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null; wait "$broker_pid" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

topic_args=(--no-default-topics --topic "lattice.shards:$partitions" --topic lattice.dead:1
  --topic lattice.changes:1)
for r in $(seq 1 "$rounds"); do
  topic_args+=(--topic "bench.kcat.$r:$partitions" --topic "bench.emit.$r:$partitions")
done
"$lattice" broker --no-stdin "${topic_args[@]}" --bootstrap-file "$tmp/bs.txt" \
  >"$tmp/broker.out" 2>"$tmp/broker.err" &
broker_pid=$!
for _ in $(seq 1 100); do [ -s "$tmp/bs.txt" ] && break; sleep 0.1; done
[ -s "$tmp/bs.txt" ] || { echo "kafka.sh: broker did not start: $(cat "$tmp/broker.err")" >&2; exit 1; }
brokers=$(cat "$tmp/bs.txt")

echo "== Kafka benchmark: $shards shards, 64 blades, $partitions partitions, dev broker $brokers"
echo "   $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); build $build"
rec="$tmp/recording.ndjson"
"$lattice" gen --shards "$shards" --blades 64 --seed 7 -o "$rec"
# kcat's input: blade|body, the same bodies byte for byte.
sed 's/^{"blade":"\([^"]*\)","seq":[0-9]*,"ts":[0-9]*,"shard":\(.*\)}$/\1|\2/' "$rec" >"$tmp/kcat.txt"
echo "   recording: $(wc -l <"$rec") lines, $(du -m "$rec" | cut -f1) MB;" \
  "bodies: $(du -m "$tmp/kcat.txt" | cut -f1) MB"

# run_measured CMD...: runs CMD and writes "wall_seconds cpu_seconds exit_code" of it (CPU = user +
# sys of the child) to $tmp/measure; read it with `read -r w c rc <"$tmp/measure"`.
run_measured() {
  python3 - "$tmp/measure" "$@" <<'PY'
import os, subprocess, sys, time
t0 = time.monotonic()
p = subprocess.run(sys.argv[2:])
wall = time.monotonic() - t0
t = os.times()
with open(sys.argv[1], "w") as f:
    f.write(f"{wall:.3f} {t.children_user + t.children_system:.3f} {p.returncode}\n")
PY
}
count_topic() {  # topic -> number of messages
  kcat -C -b "$brokers" -t "$1" -e -o beginning -q -f 'x\n' 2>/dev/null | wc -l
}
rate() { python3 -c "print(f'{$1 / $2:,.0f}')"; }

best_kcat=""; best_emit=""; cpu_kcat=""; cpu_emit=""; ratios_c=()
for r in $(seq 1 "$rounds"); do
  run_measured sh -c "kcat -P -b '$brokers' -t bench.kcat.$r -K '|' <'$tmp/kcat.txt'"
  read -r w c rc <"$tmp/measure"
  [ "$rc" = 0 ] || { echo "kafka.sh: kcat -P failed" >&2; exit 1; }
  n=$(count_topic "bench.kcat.$r")
  [ "$n" = "$shards" ] || { echo "kafka.sh: kcat -P delivered $n of $shards" >&2; exit 1; }
  echo "   (c) round $r: kcat -P       $w s wall, $c s CPU: $(rate "$shards" "$w") shards/s"
  w_kcat=$w
  if [ -z "$best_kcat" ] || python3 -c "import sys; sys.exit(0 if $w < $best_kcat else 1)"; then
    best_kcat=$w; cpu_kcat=$c
  fi
  run_measured "$lattice" emit -b "$brokers" -t "bench.emit.$r" -f "$rec" --json >"$tmp/emit.json"
  read -r w c rc <"$tmp/measure"
  [ "$rc" = 0 ] || { echo "kafka.sh: lattice emit failed" >&2; exit 1; }
  n=$(count_topic "bench.emit.$r")
  [ "$n" = "$shards" ] || { echo "kafka.sh: lattice emit delivered $n of $shards" >&2; exit 1; }
  echo "   (c) round $r: lattice emit  $w s wall, $c s CPU: $(rate "$shards" "$w") shards/s"
  ratios_c+=("$(python3 -c "print(f'{$w_kcat / $w * 100:.1f}')")")
  if [ -z "$best_emit" ] || python3 -c "import sys; sys.exit(0 if $w < $best_emit else 1)"; then
    best_emit=$w; cpu_emit=$c
  fi
done

# lattice.shards: what (a) and (b) read. Produced by lattice emit (headers, timestamps).
"$lattice" emit -b "$brokers" -t lattice.shards -f "$rec" >/dev/null
n=$(count_topic lattice.shards)
[ "$n" = "$shards" ] || { echo "kafka.sh: lattice.shards holds $n of $shards" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# (b) `lattice aggregate` from start to the whole topic merged and durable: --exit-at-end stops
# once every partition reached the end offset it had at start, after the last commit is flushed.
# The wall time is the whole process. In group mode it includes the dev broker's ~3 s wait for a
# new consumer group to form (like a real broker's group.initial.rebalance.delay.ms); the
# aggregator also reports the time from its first assignment. Standalone mode (--assign all)
# assigns the partitions by hand, as kcat -C does. AGG_FLAGS adds flags to every run.
# measure_aggregate NAME FLAGS: runs the aggregator into a new state and group; sets w_b c_b a_b.
measure_aggregate() {
  rm -rf "$tmp/state"
  run_measured sh -c "'$lattice' aggregate -b '$brokers' --state '$tmp/state' --group 'bench-$1' \
    --exit-at-end --json --log-interval 0 $2 >'$tmp/aggregate.json' 2>'$tmp/aggregate.err'"
  read -r w_b c_b rc <"$tmp/measure"
  [ "$rc" = 0 ] || { echo "kafka.sh: lattice aggregate failed: $(tail -3 "$tmp/aggregate.err")" >&2; exit 1; }
  applied=$(python3 -c "import json; print(json.load(open('$tmp/aggregate.json'))['applied'])")
  [ "$applied" = "$shards" ] || { echo "kafka.sh: lattice aggregate applied $applied of $shards" >&2; exit 1; }
  a_b=$(python3 -c "import json; print(f\"{json.load(open('$tmp/aggregate.json'))['assigned_seconds']:.3f}\")")
  echo "   (b) lattice aggregate $2: $w_b s wall ($a_b s from assignment), $c_b s CPU:" \
    "$(rate "$shards" "$w_b") shards/s ($(rate "$shards" "$a_b") from assignment)"
}
# (a) and (b) standalone (the merge path alone: consume, merge, commit durable; no change topic)
# in ROUNDS alternating pairs; the figures are the medians, the ratio the median of the rounds'.
walls_a=(); cpus_a=(); walls_bs=(); cpus_bs=(); ratios_b=()
for r in $(seq 1 "$rounds"); do
  run_measured sh -c "kcat -C -b '$brokers' -t lattice.shards -e -o beginning -q >/dev/null"
  read -r w_a c_a rc <"$tmp/measure"
  [ "$rc" = 0 ] || { echo "kafka.sh: kcat -C failed" >&2; exit 1; }
  echo "   (a) round $r: kcat -C -e of lattice.shards: $w_a s wall, $c_a s CPU: $(rate "$shards" "$w_a") shards/s"
  measure_aggregate standalone "--assign all --changes-topic '' ${AGG_FLAGS:-}"
  walls_a+=("$w_a"); cpus_a+=("$c_a"); walls_bs+=("$w_b"); cpus_bs+=("$c_b")
  ratios_b+=("$(python3 -c "print(f'{$w_a / $w_b * 100:.1f}')")")
done
median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }
median0() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.0f}')" "$@"; }
w_a=$(median "${walls_a[@]}"); c_a=$(median "${cpus_a[@]}")
w_bs=$(median "${walls_bs[@]}"); c_bs=$(median "${cpus_bs[@]}")
# The group run.
measure_aggregate group "--changes-topic '' ${AGG_FLAGS:-}"
w_bg=$w_b; c_bg=$c_b; a_bg=$a_b
# With change events to lattice.changes (as in production): bounded by how fast the broker takes
# them (about 1.5 events per shard).
measure_aggregate changes "--assign all ${AGG_FLAGS:-}"
w_bc=$w_b; c_bc=$c_b; a_bc=$a_b
# ---------------------------------------------------------------------------------------------

echo
echo "| figure | what | wall s | CPU s | shards/s | ratio |"
echo "|---|---|---:|---:|---:|---|"
echo "| (c) baseline | kcat -P -K (bodies keyed by blade) | $best_kcat | $cpu_kcat | $(rate "$shards" "$best_kcat") | |"
ratio_c=$(python3 -c "print(f'{$best_kcat / $best_emit * 100:.0f}')")
echo "| (c) | lattice emit (envelopes: key, CreateTime, lattice-seq; validated) | $best_emit | $cpu_emit | $(rate "$shards" "$best_emit") | best rounds: ${ratio_c}% of kcat -P; median of rounds $(median0 "${ratios_c[@]}")% (${ratios_c[*]}) (target >= 90%) |"
echo "| (a) baseline | kcat -C -e to /dev/null, median of $rounds | $w_a | $c_a | $(rate "$shards" "$w_a") | |"
pct() { python3 -c "print(f'{$1 / $2 * 100:.0f}')"; }
echo "| (b) | lattice aggregate --assign all (standalone), start to merged and durable, no change topic, median of $rounds | $w_bs | $c_bs | $(rate "$shards" "$w_bs") | median of rounds $(median0 "${ratios_b[@]}")% of (a) (${ratios_b[*]}) (target >= 80%) |"
echo "| (b) | lattice aggregate in a new consumer group, whole process, no change topic | $w_bg | $c_bg | $(rate "$shards" "$w_bg") | $(pct "$w_a" "$w_bg")% of (a) |"
echo "| (b) | the same, from the first partition assignment | $a_bg | | $(rate "$shards" "$a_bg") | $(pct "$w_a" "$a_bg")% of (a) |"
echo "| (b') | lattice aggregate --assign all publishing change events to lattice.changes | $w_bc | $c_bc | $(rate "$shards" "$w_bc") | $(pct "$w_a" "$w_bc")% of (a); $a_bc s from assignment |"
