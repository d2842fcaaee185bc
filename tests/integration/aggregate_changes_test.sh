#!/usr/bin/env bash
# `lattice aggregate` publishes its change feed to `lattice.changes` (DESIGN §6) on a dev broker:
# as many events as the run reports, keyed by path, and folded in order onto an empty document
# they give the durable state. The progress log carries the latency figures.
#
#   bash aggregate_changes_test.sh LATTICE_BINARY [REFERENCE_DUMP_BINARY (unused)]
set -uo pipefail

lattice=$(realpath "${1:?usage: aggregate_changes_test.sh LATTICE_BINARY}")
here=$(dirname "$(realpath "$0")")
# shellcheck source=kafka_lib.sh
source "$here/kafka_lib.sh"
kafka_test_init aggregate-changes kcat python3 jq

start_broker --topic lattice.shards:4
"$lattice" gen --shards 3000 --blades 8 --seed 5 -o rec.ndjson || die "lattice gen failed"
"$lattice" emit -b "$bootstrap" -f rec.ndjson >emit.out 2>emit.err ||
  die "lattice emit failed: $(tail -3 emit.err)"

"$lattice" aggregate -b "$bootstrap" --assign all --state st --exit-at-end --json \
  --log-interval 1ms --min-batch 64 >run.json 2>run.err ||
  die "aggregate failed: $(tail -5 run.err)"
published=$(jq -r .changes run.json)
[ "$published" -gt 0 ] && ok "the run published $published change events" ||
  fail "no change events published: $(cat run.json)"
grep -Eq 'lag_ms p50/p99: merged ([0-9]+/[0-9]+|-), published ([0-9]+/[0-9]+|-); batch ms avg' run.err &&
  ok "progress lines carry the event-time lag (merged, published) and batch times" ||
  fail "no latency figures in the progress log: $(grep 'msg/s' run.err | head -2)"

# The aggregator flushed its producer at exit: the topic holds every event.
kcat -C -b "$bootstrap" -t lattice.changes -e -q -f '%k\t%s\n' >changes.tsv 2>kcat.err ||
  die "kcat -C lattice.changes: $(cat kcat.err)"
[ "$(wc -l <changes.tsv)" == "$published" ] && ok "lattice.changes holds all $published events" ||
  fail "lattice.changes holds $(wc -l <changes.tsv) events, the run published $published"

"$lattice" state dump --state st >state.json || die "state dump failed"
# Folding the events in order onto an empty document must give the durable state (the rule of
# docs/merge-rules.md#change-events, here through Kafka: nothing lost, nothing out of order).
python3 - changes.tsv state.json <<'PY'
import json, sys

def split(path):
    parts, cur, i = [], "", 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path):
            cur += path[i + 1]
            i += 2
            continue
        if ch == ".":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    parts.append(cur)
    return parts

doc = {}
bad_key = 0
events = 0
for line in open(sys.argv[1]):
    key, value = line.rstrip("\n").split("\t", 1)
    c = json.loads(value)
    assert set(c) == {"path", "old", "new", "stamp", "cause"}, c
    assert c["cause"] in ("set", "erase", "counter", "evict"), c
    bad_key += key != c["path"]
    events += 1
    keys = split(c["path"])
    node = doc
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if c["new"] is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = c["new"]

def prune(d):  # objects left empty by erases are not visible
    if isinstance(d, dict):
        return {k: prune(v) for k, v in d.items() if not (isinstance(v, dict) and not prune(v))}
    return d

state = json.load(open(sys.argv[2]))
folded = prune(doc)
print(f"     {events} events folded; {len(json.dumps(state))} bytes of state; "
      f"{bad_key} events keyed by something else than their path")
if folded != state or bad_key:
    for k in sorted(set(folded) | set(state)):
        if folded.get(k) != state.get(k):
            print(f"     differs under {k!r}: {json.dumps(folded.get(k))[:200]} vs {json.dumps(state.get(k))[:200]}")
    sys.exit(1)
PY
[ $? == 0 ] && ok "the events folded in order give the durable state" ||
  fail "the change feed disagrees with the state"

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all ok"
