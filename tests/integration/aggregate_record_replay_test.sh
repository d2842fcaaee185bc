#!/usr/bin/env bash
# record -> replay gives the aggregator's exact state: a topic fed by `lattice emit` (envelopes
# with their own blade, seq and ts) and by `kcat -P -K` (bare bodies, no key for some, a bad one),
# merged by `lattice aggregate`, recorded with `lattice record -e`, replayed into a new state with
# `lattice replay`: the two dumps are byte-equal, and both equal the independent reference.
#
#   bash aggregate_record_replay_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY
set -uo pipefail

lattice=$(realpath "${1:?usage: aggregate_record_replay_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
refdump=$(realpath "${2:?usage: aggregate_record_replay_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
here=$(dirname "$(realpath "$0")")
# shellcheck source=kafka_lib.sh
source "$here/kafka_lib.sh"
kafka_test_init aggregate-record kcat jq python3

start_broker --topic lattice.shards:6
"$lattice" gen --shards 15000 --blades 12 --seed 41 -o rec.ndjson || die "lattice gen failed"
"$lattice" emit -b "$bootstrap" -f rec.ndjson >emit.out 2>&1 || die "emit: $(cat emit.out)"
printf 'k1\t{"kc":{"n":{"$inc":1}}}\nk1\t{"kc":{"n":{"$inc":2},"s":"x"}}\nk2\t{"kc":{"m":{"$max":4}}}\n' |
  kcat -P -b "$bootstrap" -t lattice.shards -K $'\t' || die "kcat -P -K"
printf '%s\n' '{"unkeyed":{"n":{"$inc":5}}}' '[1]' |
  kcat -P -b "$bootstrap" -t lattice.shards -p 2 || die "kcat -P -p 2"

"$lattice" aggregate "${fast_group[@]}" -b "$bootstrap" --state agg --exit-at-end --json \
  --log-interval 0 >agg.json 2>agg.err || die "aggregate failed: $(tail -3 agg.err)"
echo "     aggregate: $(cat agg.json)"
"$lattice" record -b "$bootstrap" -e -o recorded.ndjson 2>record.err ||
  die "record failed: $(tail -3 record.err)"
"$lattice" replay recorded.ndjson --state replayed --json >replay.json 2>replay.err
echo "     replay: $(cat replay.json)"
[ "$(wc -l <recorded.ndjson)" == "$(jq -r .messages agg.json)" ] &&
  ok "the recording has one line per message ($(wc -l <recorded.ndjson))" ||
  fail "recording has $(wc -l <recorded.ndjson) lines, aggregate read $(jq -r .messages agg.json)"
[ "$(jq -r .applied replay.json)" == "$(jq -r .applied agg.json)" ] &&
  [ "$(jq -r .bad replay.json)" == "$(jq -r .bad agg.json)" ] &&
  ok "replay applied and rejected what the aggregator did" ||
  fail "replay $(cat replay.json) vs aggregate $(cat agg.json)"
"$lattice" state dump --state agg >agg.dump
"$lattice" state dump --state replayed >replayed.dump
cmp -s agg.dump replayed.dump && ok "record -> replay gives the aggregator's exact state" \
  || fail "the replayed state differs from the aggregator's"
# The reference of the good envelopes of the recording (independent of both).
jq -c 'select(has("shard")) | {blade, seq, ts, shard}' recorded.ndjson >good.ndjson
"$refdump" good.ndjson >ref.dump
cmp -s agg.dump ref.dump && ok "and equals the reference" || fail "the state differs from the reference"

if [ $failures -ne 0 ]; then
  echo "aggregate_record_replay_test: $failures check(s) FAILED"
  exit 1
fi
echo "aggregate_record_replay_test: all checks passed"
