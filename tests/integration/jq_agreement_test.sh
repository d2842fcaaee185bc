#!/usr/bin/env bash
# DESIGN.md §3: on shards with increasing ts and no operators or nulls, the merged state equals
# jq's `reduce inputs as $s ({}; . * $s.shard)` over the envelopes. For several seeds and sizes of
# `lattice gen --plain`, `lattice state dump` after a replay must equal jq's result. Both sides
# are compared after the same python3 canonicalisation (sorted keys, no spaces); whether they were
# byte-equal before it is printed too (today they are).
#
#   bash jq_agreement_test.sh LATTICE_BINARY TESTS_DATA_DIR
set -uo pipefail

lattice=${1:?usage: jq_agreement_test.sh LATTICE_BINARY TESTS_DATA_DIR}
lattice=$(realpath "$lattice")
[ -x "$lattice" ] || { echo "FAIL - $lattice is not an executable"; exit 1; }
for tool in jq python3; do
  command -v "$tool" >/dev/null || { echo "FAIL - needs $tool"; exit 1; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-jq-agreement.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

canonical() {  # FILE: one canonical JSON document on stdout
  python3 -c '
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    doc = json.load(f)
print(json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
' "$1"
}

failures=0
# shards blades seed
for spec in "1 1 1" "200 4 2" "5000 16 3" "30000 64 4" "20000 3 5" "10000 256 6"; do
  read -r shards blades seed <<<"$spec"
  name="shards=$shards blades=$blades seed=$seed"
  dir="$tmp/$seed"
  mkdir -p "$dir"
  if ! "$lattice" gen --plain --shards "$shards" --blades "$blades" --seed "$seed" \
      -o "$dir/rec.ndjson"; then
    echo "FAIL - $name: lattice gen failed"
    failures=$((failures + 1))
    continue
  fi
  # --strict: a plain recording has nothing to reject; any rejection is a failure.
  if ! "$lattice" replay "$dir/rec.ndjson" --state "$dir/state" --strict --json \
      >"$dir/replay.json" 2>"$dir/replay.err"; then
    echo "FAIL - $name: lattice replay failed: $(cat "$dir/replay.err")"
    failures=$((failures + 1))
    continue
  fi
  "$lattice" state dump --state "$dir/state" >"$dir/lattice.json" || {
    echo "FAIL - $name: lattice state dump failed"
    failures=$((failures + 1))
    continue
  }
  jq -c -S -n 'reduce inputs as $s ({}; . * $s.shard)' "$dir/rec.ndjson" >"$dir/jq.json" || {
    echo "FAIL - $name: jq failed"
    failures=$((failures + 1))
    continue
  }
  bytes="byte-equal"
  cmp -s "$dir/lattice.json" "$dir/jq.json" || bytes="not byte-equal"
  if ! canonical "$dir/lattice.json" >"$dir/lattice.canonical" ||
      ! canonical "$dir/jq.json" >"$dir/jq.canonical"; then
    echo "FAIL - $name: a dump is not valid JSON"
    failures=$((failures + 1))
    continue
  fi
  if cmp -s "$dir/lattice.canonical" "$dir/jq.canonical"; then
    echo "ok   - $name: lattice state dump equals jq's merge ($(wc -c <"$dir/jq.json") bytes, $bytes)"
  else
    echo "FAIL - $name: lattice state dump differs from jq's merge; first difference:"
    python3 - "$dir/lattice.canonical" "$dir/jq.canonical" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def diff(x, y, path):
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if k not in x:
                return f"{path}.{k}: missing in lattice, jq has {json.dumps(y[k])[:200]}"
            if k not in y:
                return f"{path}.{k}: lattice has {json.dumps(x[k])[:200]}, missing in jq"
            d = diff(x[k], y[k], f"{path}.{k}")
            if d:
                return d
        return None
    if x != y or type(x) != type(y):
        return f"{path}: lattice {json.dumps(x)[:200]} vs jq {json.dumps(y)[:200]}"
    return None
print("       " + (diff(a, b, "(root)") or "(no structural difference)"))
EOF
    failures=$((failures + 1))
  fi
done

if [ $failures -ne 0 ]; then
  echo "jq_agreement_test: $failures case(s) FAILED"
  exit 1
fi
echo "jq_agreement_test: all cases passed"
