#!/usr/bin/env bash
# Bad messages on the shards topic (invalid JSON, a non-object body, a 2 MiB body, a bad
# lattice-seq header, a different body for a blade+seq already applied) land in lattice.dead with their
# reason, outcome, source position, key and original headers, while everything else is applied:
# the state equals the independent reference of the good shards.
#
#   bash aggregate_dead_letter_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY
set -uo pipefail

lattice=$(realpath "${1:?usage: aggregate_dead_letter_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
refdump=$(realpath "${2:?usage: aggregate_dead_letter_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
here=$(dirname "$(realpath "$0")")
# shellcheck source=kafka_lib.sh
source "$here/kafka_lib.sh"
kafka_test_init aggregate-dead kcat jq python3

start_broker --topic lattice.shards:4 --topic lattice.dead:2

"$lattice" gen --shards 3000 --blades 8 --seed 5 -o rec.ndjson || die "lattice gen failed"
"$lattice" emit -b "$bootstrap" -f rec.ndjson >emit.out 2>&1 || die "emit failed: $(cat emit.out)"

produce() {  # produce KEY VALUE [kcat flags...]
  local key=$1 value=$2
  shift 2
  printf '%s\t%s\n' "$key" "$value" |
    kcat -P -b "$bootstrap" -t lattice.shards -K $'\t' -X message.max.bytes=4000000 "$@" ||
    die "kcat -P of $key failed"
}
produce bad-json '{"x":'
produce non-object '[1,2,3]'
huge=$(python3 -c 'print("{\"big\":\"" + "x" * (2 * 1024 * 1024) + "\"}")')
produce huge "$huge" -H origin=test
produce bad-seq '{"h":1}' -H lattice-seq=abc
produce c1 '{"c":{"v":1}}' -H lattice-seq=7
produce c1 '{"c":{"v":2}}' -H lattice-seq=7 -H origin=second

"$lattice" aggregate "${fast_group[@]}" -b "$bootstrap" --state st --exit-at-end --json \
  --log-interval 0 >run.json 2>run.err || die "aggregate failed: $(tail -3 run.err)"
echo "     $(cat run.json)"
expect() { # expect FIELD VALUE
  local v
  v=$(jq -r ".$1" run.json)
  if [ "$v" == "$2" ]; then ok "$1 = $2"; else fail "$1 = $v, expected $2"; fi
}
expect applied 3001
expect bad 4
expect conflicts 1
expect dead_letters 5

kcat -C -b "$bootstrap" -t lattice.dead -e -q -f '%k\t%S\t%h\n' >dead.tsv 2>/dev/null
[ "$(wc -l <dead.tsv)" == 5 ] && ok "5 dead letters in lattice.dead" \
  || fail "$(wc -l <dead.tsv) dead letters in lattice.dead: $(cut -c1-200 dead.tsv)"
check_dead() { # check_dead KEY GREP-PATTERN WHAT
  if grep -P "^$1\t" dead.tsv | grep -q -- "$2"; then ok "dead letter $1: $3"
  else fail "dead letter $1 lacks $3: $(grep -P "^$1\t" dead.tsv | cut -c1-300)"; fi
}
check_dead bad-json 'lattice-outcome=bad,lattice-reason=invalid JSON' "reason invalid JSON"
check_dead non-object 'must be a JSON object' "reason non-object"
check_dead huge 'exceeds\|too large\|over' "reason too large"
check_dead huge 'origin=test' "its original header"
check_dead huge "lattice-truncated=${#huge}" "the original size (value truncated for the producer)"
check_dead bad-seq 'lattice-seq=abc.*not a decimal integer' "reason bad lattice-seq header"
check_dead c1 'lattice-outcome=conflict' "outcome conflict"
check_dead c1 'origin=second' "the conflicting message's headers"
check_dead c1 'lattice-source=lattice.shards/[0-9]*/[0-9]*' "its source position"
len=$(grep -P "^bad-json\t" dead.tsv | cut -f2)
[ "$len" == 5 ] && [ "$(grep -P "^huge\t" dead.tsv | cut -f2)" == 65536 ] && ok "the original value is kept (5 bytes of invalid JSON; the first 64 KiB of the huge one)" \
  || fail "bad-json value length $len"

# Everything else is applied: the good shards and the first c1 body.
c1_ts=$(kcat -C -b "$bootstrap" -t lattice.shards -e -q -f '%k %T\n' 2>/dev/null | awk '$1=="c1"{print $2; exit}')
{ cat rec.ndjson; echo "{\"blade\":\"c1\",\"seq\":7,\"ts\":$c1_ts,\"shard\":{\"c\":{\"v\":1}}}"; } >good.ndjson
"$refdump" good.ndjson >ref.dump || die "reference failed"
"$lattice" state dump --state st >agg.dump || die "dump failed"
if cmp -s agg.dump ref.dump; then ok "the state equals the reference of the good shards"
else fail "the state differs from the reference"; diff <(jq -S . agg.dump) <(jq -S . ref.dump) | head; fi

# A long run of good and bad messages interleaved in one partition: the aggregator decodes a chunk
# of 256 or more messages on two threads (each takes half), so both halves hold bad ones. Every
# bad message is dead-lettered with its reason, every good one applied.
python3 -c '
for i in range(1000):
    print(f"mix\t{{\"mix\":{{\"n{i}\":{i}}}}}" if i % 2 == 0 else "mix\t{\"x\":")' >mix.tsv
kcat -P -b "$bootstrap" -t lattice.shards -K $'\t' -l mix.tsv || die "kcat -P of mix.tsv failed"
"$lattice" aggregate "${fast_group[@]}" -b "$bootstrap" --state st --exit-at-end --json \
  --log-interval 0 >run.json 2>run.err || die "aggregate (mix) failed: $(tail -3 run.err)"
echo "     $(cat run.json)"
expect applied 500
expect bad 500
expect dead_letters 500
mixed=$(kcat -C -b "$bootstrap" -t lattice.dead -e -q -f '%k %h\n' 2>/dev/null |
  grep -c '^mix .*lattice-reason=invalid JSON')
[ "$mixed" == 500 ] && ok "500 interleaved bad messages in lattice.dead with their reason" ||
  fail "$mixed of 500 interleaved bad messages in lattice.dead"
"$lattice" state dump --state st >mix.dump || die "dump failed"
[ "$(jq '.mix | length' mix.dump)" == 500 ] && ok "the 500 interleaved good messages are applied" ||
  fail "mix holds $(jq '.mix | length' mix.dump) keys, not 500"

if [ $failures -ne 0 ]; then
  echo "aggregate_dead_letter_test: $failures check(s) FAILED"
  exit 1
fi
echo "aggregate_dead_letter_test: all checks passed"
