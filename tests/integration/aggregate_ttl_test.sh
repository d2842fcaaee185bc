#!/usr/bin/env bash
# TTL rules in `lattice aggregate` (DESIGN.md §4): the aggregator evicts in event time what a
# replay of the same shards evicts, from --ttl flags and from a config file's ttl: section; without
# rules nothing is evicted; counters are untouched by eviction.
#
#   bash aggregate_ttl_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY
set -uo pipefail

lattice=$(realpath "${1:?usage: aggregate_ttl_test.sh LATTICE_BINARY REFERENCE_DUMP_BINARY}")
here=$(dirname "$(realpath "$0")")
# shellcheck source=kafka_lib.sh
source "$here/kafka_lib.sh"
kafka_test_init aggregate-ttl python3

# Three blades over 3 hours of event time: intent "old" is written once at the start, intent
# "live" keeps being touched, a counter is incremented by every blade all along. With
# intents.*=1h, "old" is evicted; the last shards come long after the eviction plus the lateness.
python3 - >rec.ndjson <<'PY'
import json
t0 = 1_700_000_000_000
seqs = {}
def emit(blade, ts, shard):
    seqs[blade] = seqs.get(blade, 0) + 1
    print(json.dumps({"blade": blade, "seq": seqs[blade], "ts": ts, "shard": shard}))
emit("orch", t0, {"intents": {"old": {"host": "h1"}}})
for i in range(0, 180):
    ts = t0 + 1000 + i * 60_000
    emit("orch", ts, {"intents": {"live": {"tick": i}}})
    for b in ("s1", "s2"):
        emit(b, ts + 1, {"scrape": {"items": {"$inc": 1}}, "nodes": {b: {"status": "working"}}})
PY
start_broker --topic lattice.shards:4
"$lattice" emit -b "$bootstrap" -f rec.ndjson --json >emit.json 2>emit.err ||
  die "lattice emit failed: $(tail -3 emit.err)"

agg=("$lattice" aggregate "${fast_group[@]}" -b "$bootstrap" --log-interval 0 --changes-topic ''
  --allowed-lateness 1m --exit-at-end --json)

"${agg[@]}" --state flags --group flags --ttl 'intents.*=1h' >flags.json 2>flags.err ||
  die "aggregate with --ttl failed: $(tail -3 flags.err)"
cat >cfg.yaml <<'YAML'
group: config
ttl:
  rules:
    intents.*: 1h
YAML
"${agg[@]}" --state config -c cfg.yaml >config.json 2>config.err ||
  die "aggregate with a ttl: config failed: $(tail -3 config.err)"
"${agg[@]}" --state none --group none >none.json 2>none.err ||
  die "aggregate without TTL failed: $(tail -3 none.err)"
"$lattice" replay rec.ndjson --state replayed --allowed-lateness 1m --ttl 'intents.*=1h' \
  >replay.out 2>replay.err || die "replay failed: $(tail -3 replay.err)"

for s in flags config none replayed; do
  "$lattice" state dump --state "$s" >"$s.dump" || die "dump of $s failed"
done
[ "$(jq -c '.intents | keys' flags.dump)" == '["live"]' ] &&
  ok "--ttl evicted the idle intent and kept the live one" ||
  fail "--ttl: intents are $(jq -c '.intents | keys' flags.dump)"
cmp -s flags.dump replayed.dump && ok "the aggregator evicts what a replay evicts" ||
  fail "aggregate and replay differ: $(diff flags.dump replayed.dump | head -4)"
cmp -s config.dump flags.dump && ok "a config file's ttl: section acts like --ttl" ||
  fail "config-file TTL differs from --ttl"
[ "$(jq -c '.intents | keys' none.dump)" == '["live","old"]' ] &&
  ok "without rules nothing is evicted" || fail "without rules: $(jq -c '.intents | keys' none.dump)"
[ "$(jq -r '.scrape.items' flags.dump)" == 360 ] && [ "$(jq -r '.scrape.items' none.dump)" == 360 ] &&
  ok "the counter is exact with and without TTL (360)" ||
  fail "counter: $(jq -r '.scrape.items' flags.dump) / $(jq -r '.scrape.items' none.dump)"
"$lattice" aggregate -b "$bootstrap" --state bad --ttl 'intents.*=soon' >bad.out 2>bad.err &&
  fail "a bad --ttl was accepted" ||
  { grep -q -- '--ttl' bad.err && ok "a bad --ttl is refused: $(head -1 bad.err)" ||
    fail "bad --ttl message: $(cat bad.err)"; }

if [ $failures -ne 0 ]; then
  echo "aggregate_ttl_test: $failures check(s) FAILED"
  exit 1
fi
echo "aggregate_ttl_test: all checks passed"
