#!/usr/bin/env bash
# `lattice aggregate --assign` (standalone mode: partitions assigned by hand, no consumer group) on
# a dev broker over TCP: the canonical dump equals the independent reference's state of the
# topic; a restart resumes from the offsets stored in the state (a new state directory in the same
# group reads everything again: Kafka's committed offsets are never used); two aggregators on
# disjoint partition lists build states whose join equals the reference; bad lists are refused;
# --exit-at-end ends on a topic whose partitions are mostly empty (their end offsets, asked for
# all partitions in one request, are 0), also when nothing is new.
#
#   bash aggregate_standalone_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY
set -uo pipefail

lattice=$(realpath "${1:?usage: aggregate_standalone_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
refdump=$(realpath "${2:?usage: aggregate_standalone_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
here=$(dirname "$(realpath "$0")")
# shellcheck source=kafka_lib.sh
source "$here/kafka_lib.sh"
kafka_test_init aggregate-standalone kcat python3 jq

start_broker --brokers 1 --topic lattice.shards:8 --topic lattice.sparse:6
echo "     broker at $bootstrap"

# Two halves of one recording: the second is produced after the first run.
"$lattice" gen --shards 30000 --blades 20 --seed 23 -o rec.ndjson || die "lattice gen failed"
head -n 20000 rec.ndjson >first.ndjson
tail -n +20001 rec.ndjson >second.ndjson
"$lattice" emit -b "$bootstrap" -f first.ndjson >emit1.out 2>emit1.err || die "emit: $(cat emit1.err)"

# check_dump STATE_ARGS... : the (joined) dump of the states equals the reference of the topic.
check_dump() {
  local what=$1
  shift
  envelopes_from_topic lattice.shards >envelopes.ndjson
  "$refdump" envelopes.ndjson >ref.dump || die "reference dump failed"
  "$lattice" state dump "$@" >agg.dump || die "state dump failed"
  if cmp -s agg.dump ref.dump; then
    ok "$what equals the reference ($(wc -l <envelopes.ndjson) shards, $(wc -c <ref.dump) bytes)"
  else
    fail "$what differs from the reference"
    diff <(jq -S . agg.dump) <(jq -S . ref.dump) | head -20
  fi
}

"$lattice" aggregate -b "$bootstrap" --assign all --state st --exit-at-end --json \
  --log-interval 0 >run1.json 2>run1.err || die "aggregate --assign all failed: $(tail -5 run1.err)"
echo "     run 1: $(cat run1.json)"
[ "$(jq -r .applied run1.json)" == 20000 ] && ok "standalone: applied all 20000 shards" \
  || fail "standalone applied $(jq -r .applied run1.json) of 20000"
grep -q "assigned 8 partition(s)" run1.err && grep -q "standalone (no consumer group)" run1.err &&
  ok "all 8 partitions assigned by hand, no group" || fail "log: $(head -c 600 run1.err)"
[ "$(jq -r .rebalances run1.json)" == 0 ] && ok "no rebalance" \
  || fail "$(jq -r .rebalances run1.json) rebalances in standalone mode"
check_dump "the standalone state" --state st

# A restart continues from the offsets in the state: only the second half is read.
"$lattice" emit -b "$bootstrap" -f second.ndjson >emit2.out 2>emit2.err || die "emit: $(cat emit2.err)"
LATTICE_ASSIGN=all "$lattice" aggregate -b "$bootstrap" --state st --exit-at-end --json \
  --log-interval 0 >run2.json 2>run2.err || die "second aggregate failed: $(tail -5 run2.err)"
[ "$(jq -r .messages run2.json)" == 10000 ] && ok "a restart (LATTICE_ASSIGN=all) reads only the 10000 new shards" \
  || fail "the restart read $(jq -r .messages run2.json) messages, not 10000"
check_dump "the state after the restart" --state st

# A new state directory in the same group reads everything: Kafka's offsets are not used.
"$lattice" aggregate -b "$bootstrap" --assign all --state st-new --exit-at-end --json \
  --log-interval 0 >run3.json 2>run3.err || die "third aggregate failed: $(tail -5 run3.err)"
[ "$(jq -r .messages run3.json)" == 30000 ] && ok "a new state directory reads the whole topic" \
  || fail "a new state read $(jq -r .messages run3.json) of 30000"
# The largest batch by default: 262,144 while change events are published (they wait in memory
# until their batch is durable), 1,048,576 without them; --max-batch sets it (run5 below).
[ "$(jq -r .max_batch run3.json)" == 262144 ] &&
  ok "with change events the largest batch is 262144" || fail "max_batch: $(cat run3.json)"
"$lattice" aggregate -b "$bootstrap" --assign all --state st-new --exit-at-end --json \
  --log-interval 0 --changes-topic '' >run3b.json 2>run3b.err ||
  die "aggregate without change events failed: $(tail -5 run3b.err)"
[ "$(jq -r .messages run3b.json)" == 0 ] && [ "$(jq -r .max_batch run3b.json)" == 1048576 ] &&
  ok "without change events the largest batch is 1048576" || fail "max_batch: $(cat run3b.json)"

# A catch-up commits full batches: the broker already holds the topic, so the batch limit starts
# at --max-batch and an emptied consumer queue (the fetcher a round trip behind) does not end a
# batch; only the limit does (the time budget is lifted here). 30000 / 8192: at most 4 commits (a
# batch takes whole chunks of up to 2048 messages, so 3 can do); it was 1024, 2048, 4096, then
# 8192s, and a commit at every emptied queue: 6 or more.
"$lattice" aggregate -b "$bootstrap" --assign all --state st-catchup --exit-at-end --json \
  --log-interval 0 --min-batch 1024 --max-batch 8192 --max-batch-time 10m >run5.json 2>run5.err ||
  die "catch-up aggregate failed: $(tail -5 run5.err)"
[ "$(jq -r .messages run5.json)" == 30000 ] && [ "$(jq -r .batches run5.json)" -le 4 ] &&
  [ "$(jq -r .max_batch run5.json)" == 8192 ] &&
  ok "a catch-up of 30000 shards with --max-batch 8192: $(jq -r .batches run5.json) full batches" ||
  fail "catch-up: $(cat run5.json)"
check_dump "the state of the catch-up" --state st-catchup

# A prefetch limit far below the topic: librdkafka stops fetching whenever its queue holds
# queued.min.messages and, in 2.0.2, does not resume by itself until its broker thread's next
# wake-up (up to 1 s); the aggregator wakes it once the queue has drained to half.
"$lattice" aggregate -b "$bootstrap" --assign all --state st-small-queue --exit-at-end --json \
  --log-interval 0 -X queued.min.messages=2000 >run4.json 2>run4.err ||
  die "aggregate with queued.min.messages=2000 failed: $(tail -5 run4.err)"
[ "$(jq -r .messages run4.json)" == 30000 ] && [ "$(jq -r .fetcher_wakeups run4.json)" -gt 0 ] &&
  ok "queued.min.messages=2000: all 30000 shards, the fetcher woken $(jq -r .fetcher_wakeups run4.json) times" ||
  fail "queued.min.messages=2000: $(cat run4.json)"
check_dump "the state read through a 2000-message prefetch" --state st-small-queue

# Two standalone aggregators on disjoint partition lists: their join is the whole state.
"$lattice" aggregate -b "$bootstrap" --assign 0-2,6 --state st-a --exit-at-end --json \
  --log-interval 0 >a.json 2>a.err || die "aggregate --assign 0-2,6 failed: $(tail -5 a.err)"
"$lattice" aggregate -b "$bootstrap" --assign 3-5,7 --state st-b --exit-at-end --json \
  --log-interval 0 >b.json 2>b.err || die "aggregate --assign 3-5,7 failed: $(tail -5 b.err)"
grep -q "assigned 4 partition(s) of lattice.shards: 0@start 1@start 2@start 6@start" a.err &&
  ok "--assign 0-2,6 reads partitions 0, 1, 2 and 6" || fail "a.err: $(grep assigned a.err)"
sum=$(($(jq -r .messages a.json) + $(jq -r .messages b.json)))
[ "$sum" == 30000 ] && ok "the two partition lists read 30000 shards together" \
  || fail "the two partition lists read $sum shards"
check_dump "the join of the two partial states" --state st-a --state st-b

# Bad lists are refused with the reason.
for bad in "5-2" "1,1" "x" "3-"; do
  out=$("$lattice" aggregate -b "$bootstrap" --state st-bad --assign "$bad" --exit-at-end 2>&1); rc=$?
  [ $rc -ne 0 ] && grep -q "assign" <<<"$out" && ok "--assign '$bad' is refused" \
    || fail "--assign '$bad': rc=$rc $out"
done
out=$("$lattice" aggregate -b "$bootstrap" --state st-bad --assign 8 --exit-at-end 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "partition 8 of 'lattice.shards' does not exist" <<<"$out" &&
  ok "a partition the topic does not have is refused" || fail "--assign 8: rc=$rc $out"

# One blade: one partition of six holds everything, five are empty (end offset 0).
"$lattice" gen --shards 500 --blades 1 --seed 5 -o sparse.ndjson || die "lattice gen failed"
"$lattice" emit -b "$bootstrap" -t lattice.sparse -f sparse.ndjson >emit3.out 2>emit3.err ||
  die "emit: $(cat emit3.err)"
for run in 1 2; do
  timeout 60 "$lattice" aggregate -b "$bootstrap" --topic lattice.sparse --assign all \
    --state st-sparse --exit-at-end --json --log-interval 0 >sparse$run.json 2>sparse$run.err ||
    die "aggregate of lattice.sparse (run $run) failed or hung: $(tail -5 sparse$run.err)"
done
[ "$(jq -r .messages sparse1.json)" == 500 ] && [ "$(jq -r .reached_end sparse1.json)" == true ] &&
  ok "--exit-at-end ends on a topic with five empty partitions of six (500 shards)" ||
  fail "lattice.sparse run 1: $(cat sparse1.json)"
[ "$(jq -r .messages sparse2.json)" == 0 ] && [ "$(jq -r .reached_end sparse2.json)" == true ] &&
  ok "--exit-at-end with nothing new ends at once" || fail "lattice.sparse run 2: $(cat sparse2.json)"

if [ $failures -ne 0 ]; then
  echo "aggregate_standalone_test: $failures check(s) FAILED"
  exit 1
fi
echo "aggregate_standalone_test: all checks passed"
