#!/usr/bin/env bash
# Exactly-once effects of `lattice aggregate` across crashes (DESIGN.md §1): an aggregator
# SIGKILLed at random moments while it consumes, restarted each time, ends with a state
# byte-equal to an uninterrupted run's and to the independent reference's: nothing lost, no $inc
# counted twice, and the restarted runs never meet a shard they already merged (the offsets are
# committed in the same WriteBatch as the state).
#
#   bash aggregate_crash_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY
#
# LATTICE_CRASH_SEED fixes the random kill times (printed, to reproduce a failure).
set -uo pipefail

lattice=$(realpath "${1:?usage: aggregate_crash_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
refdump=$(realpath "${2:?usage: aggregate_crash_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
seed=${LATTICE_CRASH_SEED:-$(( $(date +%s) % 100000 ))}
RANDOM=$seed
echo "aggregate_crash_test: seed $seed (LATTICE_CRASH_SEED=$seed to repeat)"
here=$(dirname "$(realpath "$0")")
# shellcheck source=kafka_lib.sh
source "$here/kafka_lib.sh"
pid=""
kafka_test_init aggregate-crash kcat jq
on_exit() {
  if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
}

start_broker --topic lattice.shards:8
shards=120000
"$lattice" gen --shards $shards --blades 32 --seed 23 -o rec.ndjson || die "lattice gen failed"
"$lattice" emit -b "$bootstrap" -f rec.ndjson --json >emit.json 2>emit.err ||
  die "lattice emit failed: $(tail -3 emit.err)"
[ "$(jq -r .delivered emit.json)" == $shards ] || die "emit delivered $(jq -r .delivered emit.json)"
"$refdump" rec.ndjson >ref.dump || die "reference dump failed"

# Small batches make many commits, so kills land between, during and after them. Each run joins
# a group of its own: the positions come from the state, never from the group, and a fresh group
# spares waiting for the killed member's session to expire on the mock coordinator.
agg=("$lattice" aggregate "${fast_group[@]}" -b "$bootstrap" --max-batch 1000 --min-batch 250
  --log-interval 0 --changes-topic '')

"${agg[@]}" --state whole --group whole --exit-at-end --json >whole.json 2>whole.err ||
  die "uninterrupted run failed: $(tail -3 whole.err)"
"$lattice" state dump --state whole >whole.dump || die "dump failed"
cmp -s whole.dump ref.dump && ok "uninterrupted run equals the reference" \
  || fail "uninterrupted run differs from the reference"

# Kill at random moments while it consumes: once the run logged its assignment and wrote its first
# commit, after 1%..15% (halved each time a run completes first) of
# the time the uninterrupted run took from its assignment to the end (restarted runs have less left
# to do, and a later run is often faster than the first one: with up to 50%, two kills often used
# up the topic and a quiet CI run saw "only 2 kills landed"). A run that completes before
# its kill starts the crash state over (at most 3 times), so the kills land mid-topic however fast
# the machine is today.
join_ms=$(jq -r '((.seconds - .assigned_seconds) * 1000) | floor' whole.json)
consume_ms=$(jq -r '(.assigned_seconds * 1000) | floor' whole.json)
echo "     uninterrupted: group formed after ${join_ms} ms, consumed in ${consume_ms} ms"
# Where a run starts (the sum of the offsets in its assignment line) shows whether the kill before
# it landed after a commit; when it did not (the first fetch and commit can take longer than the
# uninterrupted run suggests), the next kills wait twice as long.
assigned_sum() {
  local line
  line=$(grep -m1 "assigned" "$1" 2>/dev/null) || { echo -1; return; }
  { echo 0; grep -o '@[0-9]\+' <<<"$line" | tr -d @; } | paste -sd+ | bc
}
kills=0
partial=0
run=0
restarts=0
scale=1
shrink=1
prev_sum=-1
mid=0
while { [ $kills -lt 5 ] || [ $mid -lt 2 ]; } && [ $run -lt 20 ]; do
  run=$((run + 1))
  "${agg[@]}" --state crash --group "crash-$run" --exit-at-end --json >"run$run.json" 2>"run$run.err" &
  pid=$!
  for _ in $(seq 1 1000); do
    grep -q "assigned" "run$run.err" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  sum=$(assigned_sum "run$run.err")
  if [ "$sum" -gt 0 ] && [ "$sum" -lt $shards ]; then mid=$((mid + 1)); fi
  if [ "$sum" == "$prev_sum" ] && [ $scale -lt 64 ]; then
    scale=$((scale * 2))
    echo "     the last kill came before its first commit: kills now wait ${scale}x longer"
  fi
  prev_sum=$sum
  # Wait for the run's first commit (its WAL grows past what the open wrote), so a kill lands
  # mid-topic rather than before anything was durable, however slow this run's first fetch is.
  wal0=$(cat crash/*.log 2>/dev/null | wc -c)
  for _ in $(seq 1 500); do
    [ "$(cat crash/*.log 2>/dev/null | wc -c)" -gt "$wal0" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  sleep_ms=$(( consume_ms * scale * (1 + RANDOM % 15) / 100 / shrink ))
  sleep "$(printf '%d.%03d' $((sleep_ms / 1000)) $((sleep_ms % 1000)))"
  if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null
    pid=""
    kills=$((kills + 1))
    echo "     run $run: SIGKILL ${sleep_ms} ms after its first commit"
  else
    wait "$pid" 2>/dev/null
    rc=$?
    pid=""
    [ $rc -eq 0 ] || die "run $run exited $rc: $(tail -3 "run$run.err")"
    echo "     run $run completed within ${sleep_ms} ms of its first commit"
    [ $shrink -lt 8 ] && shrink=$((shrink * 2))
    [ $kills -ge 3 ] && break
    restarts=$((restarts + 1))
    [ $restarts -le 3 ] || break
    echo "     only $kills kills before completion: starting the crash state over"
    rm -rf crash run*.json run*.err
    kills=0
    mid=0
    prev_sum=-1
    [ $scale -gt 1 ] && scale=$((scale / 2))
  fi
done
[ $kills -ge 3 ] && ok "$kills runs were killed" || fail "only $kills kills landed"

# Finish, and check what each restart found in the state.
run=$((run + 1))
"${agg[@]}" --state crash --group "crash-$run" --exit-at-end --json >"run$run.json" 2>"run$run.err" ||
  die "final run failed: $(tail -3 "run$run.err")"
echo "     final run $run: $(cat "run$run.json")"
for f in run*.err; do
  line=$(grep -m1 "assigned" "$f") || continue
  sum=$(grep -o '@[0-9]\+' <<<"$line" | tr -d @ | paste -sd+ | bc)
  if [ -n "$sum" ] && [ "$sum" -gt 0 ] && [ "$sum" -lt $shards ]; then
    partial=$((partial + 1))
  fi
done
[ $partial -ge 2 ] && ok "$partial restarts resumed mid-topic from the stored offsets" \
  || fail "only $partial restarts resumed mid-topic (kills landed before or after consuming)"
dups=0
for f in run*.json; do
  [ -s "$f" ] && dups=$((dups + $(jq -r .duplicates "$f")))
done
[ $dups == 0 ] && ok "the restarted runs met no shard they had already merged" \
  || fail "restarted runs met $dups duplicates (offsets lag the state)"
"$lattice" state dump --state crash >crash.dump || die "dump failed"
if cmp -s crash.dump whole.dump && cmp -s crash.dump ref.dump; then
  ok "after $kills kills the state equals the uninterrupted run and the reference"
else
  fail "after $kills kills the state differs"
  diff <(jq -S . crash.dump) <(jq -S . ref.dump) | head -10
fi

if [ $failures -ne 0 ]; then
  echo "aggregate_crash_test: $failures check(s) FAILED (seed $seed)"
  exit 1
fi
echo "aggregate_crash_test: all checks passed"
