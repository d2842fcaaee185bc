#!/usr/bin/env bash
# Exactly-once effects across crashes (DESIGN.md §1): a replay SIGKILLed at random moments and
# rerun until it completes must leave the state byte-equal to an uninterrupted replay, so nothing
# was lost and no $inc counted twice. Also: the resumed runs never see a duplicate (positions are
# committed with the state), the completed run plus what the killed runs committed add up to the
# recording, the counters equal the sums computed independently from the recording, and a
# further rerun reads nothing.
#
#   bash replay_crash_test.sh LATTICE_BINARY TESTS_DATA_DIR
#
# LATTICE_CRASH_SEED fixes the random sleeps (printed, to reproduce a failure);
# LATTICE_CRASH_SHARDS and LATTICE_CRASH_KILLS change the size (default 1,000,000) and the number of
# kills (default 6, at least 5 mid-run kills are required).
# shellcheck disable=SC2016  # '$inc' in single quotes is meant literally
set -uo pipefail

lattice=${1:?usage: replay_crash_test.sh LATTICE_BINARY TESTS_DATA_DIR}
lattice=$(realpath "$lattice")
[ -x "$lattice" ] || { echo "FAIL - $lattice is not an executable"; exit 1; }
for tool in jq python3; do
  command -v "$tool" >/dev/null || { echo "FAIL - needs $tool"; exit 1; }
done
seed=${LATTICE_CRASH_SEED:-$(( $(date +%s) % 100000 ))}
shards=${LATTICE_CRASH_SHARDS:-1000000}
want_kills=${LATTICE_CRASH_KILLS:-6}
RANDOM=$seed
echo "replay_crash_test: seed $seed (LATTICE_CRASH_SEED=$seed to repeat), $shards shards"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-replay-crash.XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp" || exit 1

failures=0
ok() { echo "ok   - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }
die() { echo "FAIL - $1"; exit 1; }

"$lattice" gen --shards "$shards" --blades 32 --seed 17 -o rec.ndjson || die "lattice gen failed"
grep -q '"\$inc"' rec.ndjson || die "the recording has no \$inc counters"

# The reference: one uninterrupted replay.
start=$(date +%s%N)
"$lattice" replay rec.ndjson --state ref --batch 5000 --json >ref.json 2>ref.err ||
  die "uninterrupted replay failed: $(cat ref.err)"
ref_ms=$(( ($(date +%s%N) - start) / 1000000 ))
"$lattice" state dump --state ref >ref.dump || die "state dump of the reference failed"
echo "     uninterrupted replay: ${ref_ms} ms, $(jq -c . ref.json)"
[ "$(jq -r .applied ref.json)" == "$shards" ] || die "the reference did not apply every line"

# Kills land after a random sleep of 5%..15% of the uninterrupted run (at least 50 ms) measured
# from the start of each rerun, so that several kills happen before the work runs out, mid-batch
# or mid-commit alike.
lo=$(( ref_ms / 20 > 50 ? ref_ms / 20 : 50 ))
span=$(( ref_ms / 10 > 1 ? ref_ms / 10 : 1 ))
kills=0
runs=0
restarts=0
completed_run=""
while [ $kills -lt "$want_kills" ]; do
  runs=$((runs + 1))
  [ $runs -le $((want_kills * 8)) ] || die "only $kills kills landed in $runs runs"
  sleep_ms=$(( lo + RANDOM % span ))
  "$lattice" replay rec.ndjson --state crash --batch 5000 --json >"run$runs.json" \
    2>"run$runs.err" &
  pid=$!
  sleep "$(printf '%d.%03d' $((sleep_ms / 1000)) $((sleep_ms % 1000)))"
  if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null
    rc=$?
    pid=""
    if [ $rc -eq 137 ]; then
      kills=$((kills + 1))
      echo "     run $runs: SIGKILL after ${sleep_ms} ms"
      continue
    fi
  else
    wait "$pid" 2>/dev/null
    rc=$?
    pid=""
  fi
  # The run finished before the kill.
  [ $rc -eq 0 ] || die "run $runs exited $rc: $(cat "run$runs.err")"
  echo "     run $runs: completed before the kill after ${sleep_ms} ms: $(jq -c . "run$runs.json")"
  if [ $kills -ge 5 ]; then
    completed_run="run$runs.json"
    break
  fi
  # The work ran out too early (this machine got faster than during the reference run): start
  # over from an empty state with shorter sleeps.
  restarts=$((restarts + 1))
  [ $restarts -le 3 ] || die "the replay kept completing before 5 kills landed"
  echo "     only $kills kills before the replay completed; starting over with shorter sleeps"
  rm -rf crash
  kills=0
  lo=$(( lo / 2 > 20 ? lo / 2 : 20 ))
  span=$(( span / 2 > 1 ? span / 2 : 1 ))
done
if [ $kills -ge 5 ]; then ok "$kills replays were killed mid-run"
else fail "only $kills replays were killed mid-run (at least 5 wanted)"; fi

# Rerun until a replay completes, then once more.
resumed_lines=0
resumed_dups=0
if [ -n "$completed_run" ]; then
  resumed_lines=$(jq -r .lines "$completed_run")
  resumed_dups=$(jq -r .duplicates "$completed_run")
fi
final=""
for _ in $(seq 1 5); do
  runs=$((runs + 1))
  "$lattice" replay rec.ndjson --state crash --batch 5000 --json >"run$runs.json" \
    2>"run$runs.err" || die "resumed run $runs failed: $(cat "run$runs.err")"
  final="run$runs.json"
  echo "     run $runs: $(jq -c . "$final")"
  resumed_lines=$((resumed_lines + $(jq -r .lines "$final")))
  resumed_dups=$((resumed_dups + $(jq -r .duplicates "$final")))
  [ "$(jq -r .lines "$final")" == 0 ] && break
done
expect_zero() {
  local v
  v=$(jq -r ".$2" "$final")
  if [ "$v" == 0 ]; then ok "$1"; else fail "$1: $2 = $v"; fi
}
expect_zero "a rerun after completion reads nothing" lines

"$lattice" state dump --state crash >crash.dump || die "state dump after the crashes failed"
if cmp -s crash.dump ref.dump; then
  ok "the state after $kills kills is byte-equal to the uninterrupted one ($(wc -c <ref.dump) bytes)"
else
  fail "the state after $kills kills differs from the uninterrupted one"
  python3 - crash.dump ref.dump <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def diff(x, y, path, out):
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if len(out) >= 10:
                return
            if k not in x or k not in y:
                out.append(f"{path}.{k}: crashed {json.dumps(x.get(k))[:120]} vs reference {json.dumps(y.get(k))[:120]}")
            else:
                diff(x[k], y[k], f"{path}.{k}", out)
    elif x != y:
        out.append(f"{path}: crashed {json.dumps(x)[:120]} vs reference {json.dumps(y)[:120]}")
out = []
diff(a, b, "(root)", out)
print("\n".join("       " + line for line in out))
EOF
fi

# Positions are committed in the same batch as the state, so a resumed run starts exactly after
# the last committed shard: it never meets a shard it already applied.
if [ "$resumed_dups" == 0 ]; then ok "the resumed runs met no duplicates"
else fail "the resumed runs met $resumed_dups duplicates (positions lag the state)"; fi
if [ -s crash/dead-letter.ndjson ]; then
  fail "the crashed state dir has dead letters: $(head -c 400 crash/dead-letter.ndjson)"
else
  ok "no dead letters"
fi

# What the killed runs committed plus what the resumed runs read is the whole recording: the
# killed runs committed a whole number of 5000-shard batches each.
if [ "$resumed_lines" -le "$shards" ] && [ $(( (shards - resumed_lines) % 5000 )) == 0 ]; then
  ok "killed runs committed $((shards - resumed_lines)) lines in whole batches; resumed runs read the other $resumed_lines"
else
  fail "resumed runs read $resumed_lines of $shards lines: expected the rest to be a multiple of 5000"
fi

# The counters, checked independently of the reference run: the sum of every $inc per path.
python3 - rec.ndjson crash.dump <<'EOF' || failures=$((failures + 1))
import json, sys
sums = {}
def walk(body, path):
    for k, v in body.items():
        p = path + (k,)
        if isinstance(v, dict) and len(v) == 1 and "$inc" in v:
            sums[p] = sums.get(p, 0) + v["$inc"]
        elif isinstance(v, dict):
            walk(v, p)
with open(sys.argv[1]) as f:
    for line in f:
        shard = json.loads(line)["shard"]
        if "scrape" in shard:
            walk({"scrape": shard["scrape"]}, ())
state = json.load(open(sys.argv[2]))
bad = []
for p, want in sums.items():
    node = state
    for k in p:
        node = node.get(k) if isinstance(node, dict) else None
    if node != want:
        bad.append(f"{'.'.join(p)}: state {node}, sum of $inc {want}")
if bad:
    print(f"FAIL - {len(bad)} of {len(sums)} counters differ from the sums of their $inc:")
    print("\n".join("       " + b for b in bad[:10]))
    sys.exit(1)
print(f"ok   - all {len(sums)} counters equal the sums of their $inc in the recording")
EOF

if [ $failures -ne 0 ]; then
  echo "replay_crash_test: $failures check(s) FAILED (seed $seed)"
  exit 1
fi
echo "replay_crash_test: all checks passed"
