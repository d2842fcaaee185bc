#!/usr/bin/env bash
# Two aggregators in one consumer group, each with its own state directory (DESIGN.md §1, §11):
# the partitions split between them, each merges only its share, and the join of their states
# (`lattice state dump --state A --state B`) equals the independent reference of everything
# produced. Then one stops (SIGTERM): the rebalance hands its partitions to the other, which
# starts them from its own stored offsets; with more shards produced, the survivor's state alone
# and the join both equal the reference of all shards: no gap, no double count.
#
#   bash aggregate_group_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY
set -uo pipefail

lattice=$(realpath "${1:?usage: aggregate_group_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
refdump=$(realpath "${2:?usage: aggregate_group_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
here=$(dirname "$(realpath "$0")")
# shellcheck source=kafka_lib.sh
source "$here/kafka_lib.sh"
pid_a=""
pid_b=""
kafka_test_init aggregate-group kcat jq
on_exit() {
  [ -n "$pid_a" ] && kill -9 "$pid_a" 2>/dev/null && wait "$pid_a" 2>/dev/null
  [ -n "$pid_b" ] && kill -9 "$pid_b" 2>/dev/null && wait "$pid_b" 2>/dev/null
}

start_broker --topic lattice.shards:8
"$lattice" gen --shards 40000 --blades 24 --seed 31 -o rec.ndjson || die "lattice gen failed"
head -n 25000 rec.ndjson >part1.ndjson
tail -n +25001 rec.ndjson >part2.ndjson
"$lattice" emit -b "$bootstrap" -f part1.ndjson >emit1.out 2>&1 || die "emit: $(cat emit1.out)"
"$refdump" part1.ndjson >ref1.dump
"$refdump" rec.ndjson >ref2.dump

agg=("$lattice" aggregate "${fast_group[@]}" -b "$bootstrap" --group pair --log-interval 1s --json
  --max-batch-time 100ms)
"${agg[@]}" --state A >a.json 2>a.err &
pid_a=$!
"${agg[@]}" --state B >b.json 2>b.err &
pid_b=$!

assigned() { grep -o 'assigned [0-9]* partition' "$1" | tail -1 | grep -o '[0-9]*'; }
joined() { "$lattice" state dump --state A --state B 2>/dev/null | cmp -s - "$1"; }
split() { [ "$(assigned a.err)" == 4 ] && [ "$(assigned b.err)" == 4 ]; }
wait_for 40 split && ok "the 8 partitions split 4 + 4" \
  || fail "assignment: A $(assigned a.err), B $(assigned b.err)"
if wait_for 40 joined ref1.dump; then ok "the join of A and B equals the reference"
else fail "the join of A and B did not reach the reference in 40 s"; fi
"$lattice" state dump --state A >a.dump
"$lattice" state dump --state B >b.dump
if ! cmp -s a.dump ref1.dump && ! cmp -s b.dump ref1.dump && [ "$(wc -c <a.dump)" -gt 2 ] &&
  [ "$(wc -c <b.dump)" -gt 2 ]; then
  ok "each state holds only its share ($(wc -c <a.dump) and $(wc -c <b.dump) bytes)"
else
  fail "the states are not partial: A $(wc -c <a.dump) B $(wc -c <b.dump) bytes, whole $(wc -c <ref1.dump)"
fi
"$lattice" state dump --state A --state A | cmp -s - a.dump && ok "A joined with itself is A" \
  || fail "A joined with itself differs from A"

# A leaves; B takes its partitions over from B's own offsets (the start), then more arrives.
kill -TERM "$pid_a"
wait "$pid_a"
rc=$?
pid_a=""
[ $rc == 0 ] && ok "A stopped cleanly on SIGTERM" || fail "A exited $rc: $(tail -3 a.err)"
grep -q "revoked 4 partition" a.err && ok "A committed and released its partitions" \
  || fail "no revocation in A's log"
"$lattice" emit -b "$bootstrap" -f part2.ndjson >emit2.out 2>&1 || die "emit: $(cat emit2.out)"
b_whole() { "$lattice" state dump --state B 2>/dev/null | cmp -s - ref2.dump; }
if wait_for 45 b_whole; then ok "after the handover B alone equals the reference of all shards"
else fail "B did not reach the reference of all shards in 45 s: $(assigned b.err) partitions"; fi
[ "$(assigned b.err)" == 8 ] && ok "B owns all 8 partitions" || fail "B owns $(assigned b.err)"
joined ref2.dump && ok "the join of A and B equals the reference of all shards" \
  || fail "the join of A and B differs from the reference of all shards"

kill -TERM "$pid_b"
wait "$pid_b"
rc=$?
pid_b=""
[ $rc == 0 ] && ok "B stopped cleanly" || fail "B exited $rc: $(tail -3 b.err)"
echo "     A: $(cat a.json)"
echo "     B: $(cat b.json)"
total=$(( $(jq -r .applied b.json) ))
[ "$total" == 40000 ] && [ "$(jq -r .duplicates b.json)" == 0 ] &&
  ok "B applied every shard once (40000, no duplicates)" ||
  fail "B applied $total, duplicates $(jq -r .duplicates b.json)"

if [ $failures -ne 0 ]; then
  echo "aggregate_group_test: $failures check(s) FAILED"
  exit 1
fi
echo "aggregate_group_test: all checks passed"
