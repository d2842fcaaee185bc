#!/usr/bin/env bash
# Golden outputs of the time-travel commands on the hand-written recording
# tests/data/timetravel/intents.ndjson (the worked example of docs/debugging.md): each case runs
# `lattice ARGS...` in a scratch directory holding a copy of the recording (so positions print as
# `intents.ndjson:LINE`) and compares stdout byte for byte with tests/data/timetravel/golden/NAME.
# Plus command-line checks: `replay --until` at the last ts equals the full replay, continuing a
# replay stopped by --until equals one full replay, and `diff` applied to the old dump gives the
# new dump at random cut points of a `lattice gen` recording (applied by python3, independently).
#
#   bash timetravel_golden_test.sh LATTICE_BINARY TESTS_DATA_DIR
#   UPDATE_GOLDEN=1 bash timetravel_golden_test.sh ...   # rewrites the golden files (review them!)
set -uo pipefail

lattice=${1:?usage: timetravel_golden_test.sh LATTICE_BINARY TESTS_DATA_DIR}
data=${2:?usage: timetravel_golden_test.sh LATTICE_BINARY TESTS_DATA_DIR}
lattice=$(realpath "$lattice")
data=$(realpath "$data")
[ -x "$lattice" ] || { echo "FAIL - $lattice is not an executable"; exit 1; }
command -v python3 >/dev/null || { echo "FAIL - needs python3"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-timetravel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
cp "$data/timetravel/intents.ndjson" intents.ndjson
golden_dir="$data/timetravel/golden"
export NO_COLOR=

failures=0
ok() { echo "ok   - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }

# golden NAME ARGS...: stdout of `lattice ARGS...` must equal golden/NAME
golden() {
  local name=$1
  shift
  "$lattice" "$@" >"out.$name.raw" 2>"err.$name"
  local rc=$?
  sed "s|$(pwd -P)/||g; s|$PWD/||g" "out.$name.raw" >"out.$name"
  if [ $rc -ne 0 ]; then
    fail "$name: lattice $* exited $rc: $(head -c 400 "err.$name")"
    return
  fi
  if [ "${UPDATE_GOLDEN:-}" = 1 ]; then
    cp "out.$name" "$golden_dir/$name"
    ok "$name (golden rewritten)"
  elif cmp -s "out.$name" "$golden_dir/$name"; then
    ok "$name"
  else
    fail "$name: lattice $* differs from golden/$name:"
    diff -u "$golden_dir/$name" "out.$name" | head -40
  fi
}

echo "# golden outputs"
golden diff-all.txt diff intents.ndjson
golden diff-5s-7s.txt diff intents.ndjson --from +5s --to +7s
golden diff-5s-7s.json diff intents.ndjson --from 2024-11-23T08:20:05Z --to 1732350007000 --json
golden diff-intents-seq.txt diff intents.ndjson --from-seq 8 --to-seq 13 --path intents
golden diff-intents-seq.json diff intents.ndjson --from-seq 8 --to-seq 13 --path intents --json
golden diff-backwards.txt diff intents.ndjson --from +7s --to +5s --path intents.42
golden diff-counter.json diff intents.ndjson --from-seq 5 --path 'scrape.shop\.example\.com' --json
golden step-intent42.txt step intents.ndjson --path intents.42
golden step-intent42.json step intents.ndjson --path intents.42 --json
golden step-spotter-ok.txt step intents.ndjson --path intents.42.resolution.spotter.ok
golden step-counter.txt step intents.ndjson --path 'scrape.shop\.example\.com'
golden step-node.txt step intents.ndjson --path nodes.scraper-1.status --from +1s --until +5s
golden step-all.json step intents.ndjson --json
golden step-seq.txt step intents.ndjson --from-seq 12 --until-seq 15
"$lattice" replay intents.ndjson --state full-intents >/dev/null
# A state directory keeps each file's absolute path: the goldens have the scratch directory cut.
golden_rel() { golden "$@"; }
golden_rel blame-spotter-ok.txt blame intents.42.resolution.spotter.ok --state full-intents
golden_rel blame-spotter-ok.json blame intents.42.resolution.spotter.ok --state full-intents --json
golden_rel blame-intent42.txt blame intents.42 --state full-intents
golden_rel blame-counter.txt blame 'scrape.shop\.example\.com.item_collected' --state full-intents
golden_rel blame-counter.json blame 'scrape.shop\.example\.com.item_collected' --state full-intents --json
golden_rel blame-node.json blame nodes.scraper-1.status --state full-intents --json
golden blame-host-at-5s.txt blame intents.42.host intents.ndjson --until +5s
golden blame-counter-at-seq-9.json blame 'scrape.shop\.example\.com.item_collected' intents.ndjson --until-seq 9 --json
# The rest of docs/debugging.md.
golden debug-state-intent42.json state get intents.42 --state full-intents
golden debug-diff-seq-12-15.txt diff intents.ndjson --from-seq 12 --to-seq 15 --path intents.42
golden debug-diff-erase-retry.txt diff intents.ndjson --from 2024-11-23T08:20:06Z --to 2024-11-23T08:20:06.500Z --path intents
golden debug-step-from-6s.json step intents.ndjson --path intents.42 --from +6s --json
golden debug-blame-retry.txt blame intents.42.resolution.spotter.retry intents.ndjson
"$lattice" replay intents.ndjson --state before-retry --until-seq 14 >/dev/null
if "$lattice" state get intents.42 --state before-retry 2>/dev/null; then fail "intents.42 exists after #14"
else ok "intents.42 is gone after step #14 (replay --until-seq 14)"; fi
"$lattice" replay intents.ndjson --state at-5500 --until 2024-11-23T08:20:05.500Z >/dev/null
golden replay-until-5500.dump state dump --state at-5500
"$lattice" replay intents.ndjson --state at-seq-9 --until-seq 9 >/dev/null
golden replay-until-seq-9.dump state dump --state at-seq-9

echo "# --until at the last ts equals the full replay"
"$lattice" gen --shards 3000 --blades 7 --seed 3 --intent-window 50 -o gen.ndjson
"$lattice" replay gen.ndjson --state full >/dev/null
"$lattice" state dump --state full >full.dump
last_ts=$(tail -n 1 gen.ndjson | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["ts"])')
"$lattice" replay gen.ndjson --state last --until "$last_ts" >/dev/null
"$lattice" state dump --state last >last.dump
if [ -s full.dump ] && cmp -s full.dump last.dump; then ok "replay --until LAST_TS == replay"
else fail "replay --until $last_ts differs from the full replay"; fi
"$lattice" replay gen.ndjson --state early --until $((last_ts - 1)) >/dev/null
"$lattice" state dump --state early >early.dump
if ! cmp -s full.dump early.dump; then ok "replay --until LAST_TS-1 differs (the last shard counts)"
else fail "replay --until LAST_TS-1 equals the full replay"; fi

echo "# a replay stopped by --until, continued, equals one full replay"
"$lattice" replay gen.ndjson --state cont --until +1s --batch 100 >/dev/null
"$lattice" replay gen.ndjson --state cont --until-seq 500 --batch 100 >/dev/null
"$lattice" replay gen.ndjson --state cont --until +2500ms --batch 100 >/dev/null
"$lattice" replay gen.ndjson --state cont --batch 100 >/dev/null
"$lattice" state dump --state cont >cont.dump
if cmp -s full.dump cont.dump; then ok "--until +1s, --until-seq 500, --until +2500ms, then all == replay"
else fail "the continued replay differs from the full replay"; fi
if "$lattice" replay gen.ndjson --state cont --until +1s >/dev/null 2>err.back; then
  fail "--until before the state's watermark was accepted"
elif grep -q "already past --until" err.back; then ok "--until before the state's watermark is refused"
else fail "unexpected error: $(cat err.back)"; fi

echo "# diff applied to dump(from) gives dump(to), at random cut points"
# apply.py OLD_DUMP DIFF_JSON NEW_DUMP: applies the changes as docs/cli.md specifies and compares.
cat >paths.py <<'PY'
def split(path):
    """A dotted path with \\. and \\\\ escapes and \\e (an empty key; docs/cli.md, Paths) as a
    list of keys."""
    keys, cur, i = [], "", 0
    while i < len(path):
        c = path[i]
        if c == "\\":
            if path[i + 1] != "e":
                cur += path[i + 1]
            i += 2
            continue
        if c == ".":
            keys.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    keys.append(cur)
    return keys
PY
cat >apply.py <<'PY'
import json, sys
from paths import split

old = json.load(open(sys.argv[1]))
diff = json.load(open(sys.argv[2]))
new = json.load(open(sys.argv[3]))
for c in diff["changes"]:
    keys = split(c["path"])
    if c["op"] == "remove":
        chain = [old]
        for k in keys[:-1]:
            chain.append(chain[-1][k])
        assert chain[-1][keys[-1]] == c["old"], c
        del chain[-1][keys[-1]]
        for i in range(len(chain) - 1, 0, -1):
            if chain[i]:
                break
            del chain[i - 1][keys[i - 1]]
    else:
        node = old
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        if c["op"] == "change":
            assert node[keys[-1]] == c["old"], c
        else:
            assert keys[-1] not in node, c
        node[keys[-1]] = c["new"]
sys.exit(0 if old == new else 1)
PY
for cut in "+100ms +2s" "+2s +100ms" "+0ms +3s" "+1234ms +1235ms" "+2999ms +1h"; do
  set -- $cut
  "$lattice" replay gen.ndjson --state "a$1" --until "$1" >/dev/null 2>&1 || true
  "$lattice" replay gen.ndjson --state "b$2" --until "$2" >/dev/null 2>&1 || true
  "$lattice" state dump --state "a$1" >from.dump
  "$lattice" state dump --state "b$2" >to.dump
  "$lattice" diff gen.ndjson --from "$1" --to "$2" --json >d.json
  if python3 apply.py from.dump d.json to.dump; then
    ok "diff --from $1 --to $2 applied to replay --until $1 gives replay --until $2 ($(python3 -c 'import json,sys; print(len(json.load(open("d.json"))["changes"]))') changes)"
  else
    fail "diff --from $1 --to $2 applied to the old dump does not give the new dump"
  fi
done

echo "# step: the changes folded onto dump(from) give dump(until)"
# fold.py OLD_DUMP STEP_NDJSON NEW_DUMP: each event's old must be what is there; new replaces it.
cat >fold.py <<'PY'
import json, sys
from paths import split
doc = json.load(open(sys.argv[1]))
for line in open(sys.argv[2]):
    e = json.loads(line)
    keys = split(e["path"])
    node = doc
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    assert node.get(keys[-1]) == e["old"], e
    if e["new"] is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = e["new"]
sys.exit(0 if doc == json.load(open(sys.argv[3])) else 1)
PY
for cut in "+100ms +2s" "+0ms +3s" "+1234ms +1235ms"; do
  set -- $cut
  "$lattice" state dump --state "a$1" >from.dump
  "$lattice" state dump --state "b$2" >to.dump
  "$lattice" step gen.ndjson --from "$1" --until "$2" --json >s.ndjson
  if python3 fold.py from.dump s.ndjson to.dump; then
    ok "step --from $1 --until $2 folded onto replay --until $1 gives replay --until $2 ($(wc -l <s.ndjson) events)"
  else
    fail "step --from $1 --until $2 folded onto the old dump does not give the new dump"
  fi
done

echo "# colour"
"$lattice" diff intents.ndjson --from +5s --to +7s --color always >colour.out
if grep -q $'\x1b\[31m- intents.42.host' colour.out; then ok "--color always colours removals"
else fail "--color always: no colour in $(head -c 200 colour.out | od -c | head -3)"; fi
"$lattice" step intents.ndjson --path intents.42 --color always >colour-step.out
if grep -q $'\x1b\[1;36m#4 intents.ndjson:4' colour-step.out && grep -q $'\x1b\[32m+ intents.42 =' colour-step.out
then ok "step --color always colours headers and changes"
else fail "step --color always: $(head -c 200 colour-step.out | od -c | head -3)"; fi
if ! grep -q $'\x1b' out.diff-5s-7s.txt out.step-intent42.txt; then ok "no colour when stdout is not a terminal"
else fail "colour codes in piped output"; fi

echo "# blame errors"
if "$lattice" blame intents.41.host --state full-intents 2>err.none; then fail "blame of nothing exits 0"
elif grep -q "lattice: nothing at 'intents.41.host'" err.none; then ok "blame of nothing: exit 1, named"
else fail "unexpected error: $(cat err.none)"; fi
if "$lattice" blame x intents.ndjson --state full-intents 2>/dev/null; then fail "blame with --state and FILE accepted"
else ok "blame takes --state or recordings, not both"; fi

echo "# errors"
if "$lattice" diff intents.ndjson --from yesterday 2>err.ts; then fail "--from yesterday accepted"
elif grep -q "lattice: error: --from: 'yesterday' is not a timestamp" err.ts; then ok "bad --from is named"
else fail "unexpected error: $(cat err.ts)"; fi
if "$lattice" diff intents.ndjson --from 1 --from-seq 2 2>/dev/null; then fail "--from with --from-seq accepted"
else ok "--from and --from-seq exclude each other"; fi
if "$lattice" diff missing.ndjson 2>err.missing; then fail "a missing file accepted"
elif grep -q "cannot read 'missing.ndjson'" err.missing; then ok "a missing file is named"
else fail "unexpected error: $(cat err.missing)"; fi

if [ $failures -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
