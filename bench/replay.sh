#!/usr/bin/env bash
# End-to-end replay throughput against baselines measured in the same run, on the same file.
#
#   bench/replay.sh [BUILD_DIR]      (default: build; needs a Release build with LATTICE_BENCH=ON)
#
# It writes one recording with `lattice gen --shards 2000000 --blades 64 --seed 7` (SHARDS=N in
# the environment changes the count) and measures, in ROUNDS rounds (default 3), one after the
# other:
#   (a)  baseline: simdjson's DOM parser on every line, reading every key and value
#        (BM_SimdjsonParseTouchAll in bench/core/shard_decoder_bench.cc);
#   (a') ShardDecoder::DecodeEnvelope alone (BM_ShardDecoderDecodeEnvelope, same program);
#   (b)  parse + merge, persistence off, one thread: decode and MergeEngine::Apply of every line,
#        AdvanceWatermark every 65,536 shards (BM_MergeEngineParseAndMerge);
#   (c)  `lattice replay FILE --state FRESH_DIR`: end to end with the RocksDB WAL on (no fsync,
#        the default), timed around the whole process (open, read, merge, commit, close);
#   (r)  for scale: raw RocksDB writes of every leaf of every shard, WAL on, one WriteBatch per
#        65,536 shards, only DB::Write timed (BM_RocksDbPutEveryLeaf).
# (a), (a'), (b) and (r) run the Google Benchmark programs with LATTICE_BENCH_FILE pointing at
# the recording, so they read exactly the lines (c) replays. They hold the file in memory and do
# not time loading it; (c) reads it from the page cache (the file was just written). Each figure
# is one pass over the file (Google Benchmark stops after the first iteration longer than the
# minimum time) per round; (r) runs once, after the rounds. Each figure is the median of its
# rounds, and b/a the median of the rounds' ratios (each from adjacent measurements): this host's
# speed drifts by 20-40% within a minute, so one pass of each can land on different speeds.
#
# Throughput is shards per second of wall-clock time. On a busy machine wall clock overstates the
# cost of one-thread figures, so the CPU-time figures of (a), (a') and (b) are printed too, and
# (c)'s CPU time by thread (merge, decode, store writer); the load average is printed at the
# start. Runtime: about 1-2 minutes on 2 cores (ROUNDS=3).
#
# Targets: (b) >= 2,000,000 shards/s and >= 40% of (a); (c) >= 1,000,000 shards/s.
# Exit status: 0 when every figure was measured (a missed target is reported, not an error).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
shards=${SHARDS:-2000000}
rounds=${ROUNDS:-3}

lattice="$build/cli/lattice"
for bin in "$lattice" "$build/bench/shard_decoder_bench" "$build/bench/merge_engine_bench" \
  "$build/bench/rocksdb_put_bench"; do
  if [ ! -x "$bin" ]; then
    echo "replay.sh: $bin not found; build first:" >&2
    echo "  cmake -S $root -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release && ninja -C $build" >&2
    exit 1
  fi
done
for tool in jq python3; do
  command -v "$tool" >/dev/null || { echo "replay.sh: needs $tool" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-replay-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rec="$tmp/recording.ndjson"

echo "== lattice replay benchmark: $shards shards, 64 blades, seed 7"
echo "   $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); build $build"
"$lattice" gen --shards "$shards" --blades 64 --seed 7 -o "$rec"
echo "   recording: $(wc -l <"$rec") lines, $(du -m "$rec" | cut -f1) MB"

# Runs a Google Benchmark program on the recording and prints "wall_shards_per_s cpu_shards_per_s"
# of the named benchmark.
run_bench() {  # program filter min_time
  local out="$tmp/$2.json"
  LATTICE_BENCH_FILE="$rec" "$build/bench/$1" --benchmark_filter="^$2(/real_time)?\$" \
    --benchmark_min_time="$3" --benchmark_format=json >"$out" 2>"$tmp/$2.err" || {
    echo "replay.sh: $1 failed:" >&2
    cat "$tmp/$2.err" >&2
    exit 1
  }
  jq -r --arg name "$2" '
    [.benchmarks[] | select(.run_name == $name or .run_name == ($name + "/real_time"))][0] as $b
    | if $b == null then error("no result for " + $name)
      elif $b.error_occurred then error($b.error_message)
      else
        ($b.time_unit | {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1}[.]) as $u
        | "\($b.shards / ($b.real_time * $u)) \($b.shards / ($b.cpu_time * $u))"
      end' "$out"
}

# Each figure is measured ROUNDS times, (a), (a'), (b), (c) in turn, and reported as the median:
# this host's speed drifts by 20-40% within a minute, and a ratio from adjacent measurements of
# one round is steadier than one pass of each.
A=() AC=() D=() DC=() B=() BC=() BA=() C=() CI=() CR=() CU=() CS=() CT=()
for round in $(seq 1 "$rounds"); do
echo "== round $round of $rounds"
echo "-- (a)  simdjson DOM parse, every field read (baseline)"
read -r a_wall a_cpu < <(run_bench shard_decoder_bench BM_SimdjsonParseTouchAll 0.5)
echo "-- (a') ShardDecoder::DecodeEnvelope"
read -r d_wall d_cpu < <(run_bench shard_decoder_bench BM_ShardDecoderDecodeEnvelope 0.5)
echo "-- (b)  parse + merge, persistence off, one thread"
read -r b_wall b_cpu < <(run_bench merge_engine_bench BM_MergeEngineParseAndMerge 0.5)

echo "-- (c)  lattice replay into a fresh state dir (WAL on)"
state="$tmp/state"
# Timed by a small runner: wall clock around the process, user/sys from its rusage, and the CPU
# time of each thread (lattice names them: lattice-decode, lattice-writer; the merge thread is
# `lattice`) sampled from /proc/PID/task/*/stat every 10 ms until the process exits, so a thread's
# last <10 ms may be missing from its figure.
python3 - "$tmp/replay.time" "$tmp/replay.threads" "$lattice" replay "$rec" --state "$state" \
  --json >"$tmp/replay.json" <<'PY'
import os, subprocess, sys, time
out_time, out_threads, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
tck = os.sysconf("SC_CLK_TCK")
start = time.monotonic()
proc = subprocess.Popen(cmd)
cpu = {}
while True:
    try:
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            try:
                with open(f"/proc/{proc.pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            cpu[tid] = (name, (int(fields[11]) + int(fields[12])) / tck)
    except OSError:
        pass
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid != 0:
        break
    time.sleep(0.01)
wall = time.monotonic() - start
with open(out_time, "w") as f:
    f.write(f"{wall} {usage.ru_utime} {usage.ru_stime}\n")
by_name = {}
for name, seconds in cpu.values():
    by_name[name] = by_name.get(name, 0.0) + seconds
with open(out_threads, "w") as f:
    f.write(", ".join(f"{n} {s:.2f} s" for n, s in sorted(by_name.items(), key=lambda x: -x[1])
                      if s > 0) + "\n")
sys.exit(os.waitstatus_to_exitcode(status))
PY
read -r c_real c_user c_sys < <(tail -n 1 "$tmp/replay.time")
c_threads=$(cat "$tmp/replay.threads")
c_lines=$(jq -r .lines "$tmp/replay.json")
c_inner=$(jq -r .shards_per_s "$tmp/replay.json")
if [ "$c_lines" != "$shards" ] || [ "$(jq -r .applied "$tmp/replay.json")" != "$shards" ]; then
  echo "replay.sh: lattice replay did not apply every line: $(cat "$tmp/replay.json")" >&2
  exit 1
fi
c_wall=$(python3 -c "print($c_lines / $c_real)")
state_mb=$(du -sm "$state" | cut -f1)
rm -rf "$state"
python3 -c "import sys; print('   round: a %.2f  a\' %.2f  b %.2f  c %.2f M shards/s' % tuple(
    float(x) / 1e6 for x in sys.argv[1:]))" "$a_wall" "$d_wall" "$b_wall" "$c_wall"
A+=("$a_wall") AC+=("$a_cpu") D+=("$d_wall") DC+=("$d_cpu") B+=("$b_wall") BC+=("$b_cpu")
BA+=("$(python3 -c "print($b_wall / $a_wall)")") C+=("$c_wall") CI+=("$c_inner") CR+=("$c_real")
CU+=("$c_user") CS+=("$c_sys") CT+=("$c_threads")
done

echo "-- (r)  raw RocksDB write of every leaf (for scale)"
read -r r_wall _ < <(run_bench rocksdb_put_bench BM_RocksDbPutEveryLeaf 0.1)
leaves=$(jq -r '.benchmarks[0].leaves' "$tmp/BM_RocksDbPutEveryLeaf.json")

join() { local IFS=,; echo "$*"; }
python3 - "$shards" "$(join "${A[@]}")" "$(join "${AC[@]}")" "$(join "${D[@]}")" \
  "$(join "${DC[@]}")" "$(join "${B[@]}")" "$(join "${BC[@]}")" "$(join "${C[@]}")" \
  "$(join "${CI[@]}")" "$(join "${CR[@]}")" "$(join "${CU[@]}")" "$(join "${CS[@]}")" "$r_wall" \
  "$leaves" "$state_mb" "$(join "${BA[@]}")" "${CT[@]}" <<'EOF'
import statistics
import sys
series = [list(map(float, x.split(","))) for x in sys.argv[2:13]]
rounds = len(series[0])
b_over_a = list(map(float, sys.argv[16].split(",")))
thread_lines = sys.argv[17:]
# The round whose (c) is the median: its wall, CPU and threads are printed together.
c_mid = sorted(range(rounds), key=lambda i: series[6][i])[(rounds - 1) // 2]
(a, a_cpu, d, d_cpu, b, b_cpu, c, c_inner) = (statistics.median(x) for x in series[:8])
c_real, c_user, c_sys = (x[c_mid] for x in series[8:11])
threads = thread_lines[c_mid]
shards, r, leaves, state_mb = map(float, (sys.argv[1], sys.argv[13], sys.argv[14], sys.argv[15]))
ba = statistics.median(b_over_a)

def rate(x):
    return f"{x / 1e6:6.2f} M shards/s"

def check(ok):
    return "met" if ok else "MISSED"

print()
print(f"results for {int(shards):,} shards, median of {rounds} round(s) (wall clock; CPU time "
      "in brackets)")
for name, i in (("a", 0), ("a'", 2), ("b", 4), ("c", 6)):
    print(f"  ({name}) by round: " + "  ".join(f"{x / 1e6:.2f}" for x in series[i]) + " M shards/s")
print(f"  b/a by round: " + "  ".join(f"{x:.1%}" for x in b_over_a))
print(f"  (a)  simdjson parse, every field    {rate(a)}  [{rate(a_cpu)}]")
print(f"  (a') ShardDecoder decode            {rate(d)}  [{rate(d_cpu)}]")
print(f"  (b)  parse + merge, 1 thread        {rate(b)}  [{rate(b_cpu)}]")
print(f"  (c)  lattice replay, WAL on         {rate(c)}  "
      f"({c_real:.2f} s wall, {c_user + c_sys:.2f} s CPU; replay loop alone "
      f"{c_inner / 1e6:.2f} M/s; state {int(state_mb)} MB)")
print(f"       CPU by thread: {threads}")
print(f"  (r)  raw RocksDB put of every leaf  {rate(r)}  ({int(leaves):,} leaf writes, "
      f"{leaves / shards * r / 1e6:.2f} M writes/s)")
print()
print("ratios")
print(f"  a'/a = {d / a:5.1%}   b/a = {ba:5.1%} (median of the rounds' ratios; CPU "
      f"{b_cpu / a_cpu:5.1%})   "
      f"c/b = {c / b:5.1%}   c/r = {c / r:5.1%}")
print()
print("targets")
print(f"  (b) >= 2,000,000 shards/s   {b:>12,.0f}   {check(b >= 2e6)}")
print(f"  (b) >= 40% of (a)           {ba:>12.1%}   {check(ba >= 0.4)}")
print(f"  (c) >= 1,000,000 shards/s   {c:>12,.0f}   {check(c >= 1e6)}")
EOF
