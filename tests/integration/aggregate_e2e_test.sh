#!/usr/bin/env bash
# `lattice aggregate` end to end on a dev broker over TCP: many blades on many partitions, produced
# by plain `kcat -P -K` with bare bodies (and a few unkeyed messages); the aggregator's canonical
# dump must equal the independent reference's state (tests/crdt/reference) of the same shards,
# read back from the topic; a second run reads nothing new; a config file and LATTICE_*
# variables are honoured with flag > environment > file precedence.
#
#   bash aggregate_e2e_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY
set -uo pipefail

lattice=$(realpath "${1:?usage: aggregate_e2e_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
refdump=$(realpath "${2:?usage: aggregate_e2e_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
here=$(dirname "$(realpath "$0")")
# shellcheck source=kafka_lib.sh
source "$here/kafka_lib.sh"
kafka_test_init aggregate-e2e kcat python3 jq

start_broker --brokers 3 --topic lattice.shards:16
echo "     broker at $bootstrap"

# 20,000 shards of 24 blades, as `kcat -P -K<TAB>` lines "blade<TAB>body".
"$lattice" gen --shards 20000 --blades 24 --seed 11 -o rec.ndjson || die "lattice gen failed"
jq -r '[.blade, (.shard | tojson)] | @tsv' rec.ndjson >kcat.tsv || die "jq failed"
kcat -P -b "$bootstrap" -t lattice.shards -K $'\t' <kcat.tsv 2>kcat.err || die "kcat -P: $(cat kcat.err)"
# Unkeyed messages pinned to two partitions: their blade is unkeyed/<partition>.
printf '%s\n' '{"unkeyed":{"n":{"$inc":1}}}' '{"unkeyed":{"n":{"$inc":2}},"last":"a"}' |
  kcat -P -b "$bootstrap" -t lattice.shards -p 3 2>>kcat.err || die "kcat -P -p 3"
printf '%s\n' '{"unkeyed":{"n":{"$inc":10}}}' '{"last":"b"}' |
  kcat -P -b "$bootstrap" -t lattice.shards -p 11 2>>kcat.err || die "kcat -P -p 11"
total=20004

"$lattice" aggregate "${fast_group[@]}" -b "$bootstrap" --state st --exit-at-end --json --log-interval 1s \
  >run1.json 2>run1.err || die "aggregate failed: $(tail -5 run1.err)"
echo "     run 1: $(cat run1.json)"
[ "$(jq -r .messages run1.json)" == $total ] && ok "consumed all $total messages" \
  || fail "consumed $(jq -r .messages run1.json) of $total messages"
[ "$(jq -r .applied run1.json)" == $total ] && ok "applied all of them" \
  || fail "applied $(jq -r .applied run1.json) of $total"
[ "$(jq -r .dead_letters run1.json)" == 0 ] && ok "no dead letters" || fail "dead letters"
grep -q "assigned 16 partition(s)" run1.err && ok "all 16 partitions assigned" \
  || fail "no assignment of 16 partitions in the log"
grep -Eq "msg/s.*lag" run1.err && ok "progress lines with lag in the log" \
  || fail "no progress line in the log: $(head -c 600 run1.err)"

envelopes_from_topic lattice.shards >envelopes.ndjson
[ "$(wc -l <envelopes.ndjson)" == $total ] || die "read back $(wc -l <envelopes.ndjson) envelopes"
"$refdump" envelopes.ndjson >ref.dump || die "reference dump failed"
"$lattice" state dump --state st >agg.dump || die "state dump failed"
if cmp -s agg.dump ref.dump; then
  ok "aggregated state equals the reference ($(wc -c <ref.dump) bytes)"
else
  fail "aggregated state differs from the reference"
  diff <(jq -S . agg.dump) <(jq -S . ref.dump) | head -20
fi
[ "$(jq -c .unkeyed agg.dump)" == '{"n":13}' ] && ok "unkeyed messages counted as their own blades" \
  || fail "unkeyed: $(jq -c .unkeyed agg.dump)"

# The positions are in the state: a second run reads nothing and changes nothing.
"$lattice" aggregate "${fast_group[@]}" -b "$bootstrap" --state st --exit-at-end --json --log-interval 0 \
  >run2.json 2>run2.err || die "second aggregate failed: $(tail -5 run2.err)"
[ "$(jq -r .messages run2.json)" == 0 ] && ok "a second run reads nothing" \
  || fail "second run read $(jq -r .messages run2.json) messages"
"$lattice" state dump --state st | cmp -s - agg.dump && ok "and leaves the state as it was" \
  || fail "the second run changed the state"

# Settings: config file < environment < flag. The file names a group and a wrong topic; the
# environment fixes the topic; a flag overrides the environment's state directory.
cat >agg.yaml <<YAML
brokers: $bootstrap
topic: no.such.topic
group: from-file
state: st-file
log_interval: 0
kafka:
  client.id: from-file
YAML
out=$(LATTICE_TOPIC=lattice.shards LATTICE_STATE=st-env "$lattice" aggregate "${fast_group[@]}" --config agg.yaml \
  --state st-flag --exit-at-end --json 2>cfg.err)
rc=$?
if [ $rc -eq 0 ] && [ "$(jq -r .messages <<<"$out")" == $total ] && [ -d st-flag ] &&
  ! [ -e st-env ] && ! [ -e st-file ]; then
  ok "config file + environment + flag resolved with flag > env > file"
else
  fail "settings precedence: rc=$rc $out $(tail -3 cfg.err); dirs: $(ls -d st-* 2>/dev/null)"
fi
out=$("$lattice" aggregate --config agg.yaml --exit-at-end 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "no.such.topic" <<<"$out" && ok "a missing topic is a clear error" \
  || fail "missing topic: rc=$rc $out"
out=$("$lattice" aggregate "${fast_group[@]}" -b "$bootstrap" --state st --max-batch 0 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "max_batch" <<<"$out" && ok "an out-of-range setting is refused" \
  || fail "--max-batch 0: rc=$rc $out"

if [ $failures -ne 0 ]; then
  echo "aggregate_e2e_test: $failures check(s) FAILED"
  exit 1
fi
echo "aggregate_e2e_test: all checks passed"
