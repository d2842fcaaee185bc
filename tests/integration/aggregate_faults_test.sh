#!/usr/bin/env bash
# `lattice aggregate` through broker faults injected with the dev broker's control channel:
# partition leaders moved, request errors on Fetch/OffsetCommit/Heartbeat/Produce, and every broker
# down for a while (shards produced meanwhile wait in the emitter). The aggregator keeps going or
# waits and resumes; nothing is lost or merged twice: after each phase the state equals the
# independent reference of what was produced so far, and SIGTERM ends it cleanly (exit 0).
#
#   bash aggregate_faults_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY
set -uo pipefail

lattice=$(realpath "${1:?usage: aggregate_faults_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
refdump=$(realpath "${2:?usage: aggregate_faults_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
here=$(dirname "$(realpath "$0")")
# shellcheck source=kafka_lib.sh
source "$here/kafka_lib.sh"
pid=""
emit_pid=""
kafka_test_init aggregate-faults kcat jq
on_exit() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ -n "$emit_pid" ] && kill -9 "$emit_pid" 2>/dev/null && wait "$emit_pid" 2>/dev/null
}

start_broker --brokers 3 --topic lattice.shards:6
"$lattice" gen --shards 30000 --blades 16 --seed 29 -o rec.ndjson || die "lattice gen failed"
head -n 10000 rec.ndjson >part1.ndjson
sed -n '10001,20000p' rec.ndjson >part2.ndjson
tail -n +20001 rec.ndjson >part3.ndjson

"$lattice" aggregate "${fast_group[@]}" -b "$bootstrap" --state st --json --log-interval 1s \
  --max-batch-time 100ms >agg.json 2>agg.err &
pid=$!

# converged REFERENCE_FILE: the live state equals it (read while the aggregator writes).
converged() { "$lattice" state dump --state st 2>/dev/null | cmp -s - "$1"; }
phase() { # phase NAME REFERENCE_FILE
  if wait_for 40 converged "$2"; then ok "$1: the state equals the reference"
  else
    fail "$1: the state did not converge to the reference in 40 s"
    tail -5 agg.err
  fi
}
emit() { "$lattice" emit -b "$bootstrap" -f "$1" --timeout 60s >"$1.out" 2>&1; }

emit part1.ndjson || die "emit part 1 failed: $(tail -3 part1.ndjson.out)"
cat part1.ndjson >sofar.ndjson
"$refdump" sofar.ndjson >ref1.dump
phase "no faults" ref1.dump

# Leaders move and requests fail.
for cmd in "leader lattice.shards 0 2" "leader lattice.shards 1 3" "leader lattice.shards 2 1" \
  "errors Fetch 8 NOT_LEADER_FOR_PARTITION" "errors OffsetCommit 4 REQUEST_TIMED_OUT" \
  "errors Heartbeat 2 COORDINATOR_NOT_AVAILABLE" "errors Produce 3 NOT_ENOUGH_REPLICAS"; do
  answer=$(ctl "$cmd")
  [ "$answer" == ok ] || fail "control '$cmd': $answer"
done
emit part2.ndjson || die "emit part 2 failed: $(tail -3 part2.ndjson.out)"
for cmd in "leader lattice.shards 3 3" "leader lattice.shards 4 2" "errors Fetch 5 UNKNOWN_LEADER_EPOCH"; do
  answer=$(ctl "$cmd")
  [ "$answer" == ok ] || fail "control '$cmd': $answer"
done
cat part2.ndjson >>sofar.ndjson
"$refdump" sofar.ndjson >ref2.dump
phase "leader changes and request errors" ref2.dump

# Every broker down; shards produced meanwhile wait in the emitter; then the brokers come back.
for b in 1 2 3; do [ "$(ctl "down $b")" == ok ] || fail "down $b"; done
emit part3.ndjson &
emit_pid=$!
sleep 3
kill -0 "$pid" 2>/dev/null && ok "the aggregator waits while every broker is down" \
  || fail "the aggregator exited while the brokers were down: $(tail -3 agg.err)"
for b in 1 2 3; do [ "$(ctl "up $b")" == ok ] || fail "up $b"; done
wait "$emit_pid" || fail "emit part 3 failed: $(tail -3 part3.ndjson.out)"
emit_pid=""
"$refdump" rec.ndjson >ref3.dump
phase "all brokers down and up again" ref3.dump

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=""
[ $rc == 0 ] && ok "SIGTERM: exit 0" || fail "SIGTERM: exit $rc: $(tail -3 agg.err)"
echo "     $(cat agg.json)"
[ "$(jq -r .applied agg.json)" == 30000 ] && [ "$(jq -r .duplicates agg.json)" == 0 ] &&
  ok "every shard applied once (30000 applied, no duplicates met)" ||
  fail "applied $(jq -r .applied agg.json), duplicates $(jq -r .duplicates agg.json)"
"$lattice" state dump --state st | cmp -s - ref3.dump && ok "the final state equals the reference" \
  || fail "the final state differs from the reference"

if [ $failures -ne 0 ]; then
  echo "aggregate_faults_test: $failures check(s) FAILED"
  exit 1
fi
echo "aggregate_faults_test: all checks passed"
