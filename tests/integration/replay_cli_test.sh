#!/usr/bin/env bash
# The `lattice` command line as a user meets it: resumable replay (re-runs, appended lines, stdin,
# .zst), --memory-budget 0 (same state, pages out and read back), the dead-letter file,
# `state get|scan|dump` on a small hand-written recording, --help of
# every subcommand, errors for bad flags, and the lock that keeps a second replay off a state
# directory in use.
#
#   bash replay_cli_test.sh LATTICE_BINARY TESTS_DATA_DIR
#
# Every check prints "ok" or "FAIL" with what was expected; the script exits 1 if any failed.
# shellcheck disable=SC2016  # '$' in single-quoted JSON and paths is meant literally
set -uo pipefail

lattice=${1:?usage: replay_cli_test.sh LATTICE_BINARY TESTS_DATA_DIR}
lattice=$(realpath "$lattice")
[ -x "$lattice" ] || { echo "FAIL - $lattice is not an executable"; exit 1; }
for tool in jq zstd python3; do
  command -v "$tool" >/dev/null || { echo "FAIL - needs $tool"; exit 1; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-replay-cli.XXXXXX")
bg_pid=""
cleanup() {
  if [ -n "$bg_pid" ]; then kill -9 "$bg_pid" 2>/dev/null; wait "$bg_pid" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp" || exit 1

failures=0
ok() { echo "ok   - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }
# expect_eq NAME ACTUAL EXPECTED
expect_eq() {
  if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: expected '$3', got '$2'"; fi
}
# summary FILE FIELD: a field of a `replay --json` summary
# same_dump NAME A B: two non-empty dumps are byte-equal
same_dump() {
  if [ -s "$2" ] && cmp -s "$2" "$3"; then ok "$1"
  else fail "$1: $2 ($(wc -c <"$2" 2>/dev/null) bytes) and $3 ($(wc -c <"$3" 2>/dev/null) bytes) differ"; fi
}
summary() { jq -r ".$2" "$1" 2>/dev/null || echo "(no summary in $1: $(head -c 300 "$1"))"; }
# replay_json OUT ARGS...: runs `lattice replay ARGS --json`, summary to OUT, stderr to OUT.err
replay_json() {
  local out=$1
  shift
  "$lattice" replay "$@" --json >"$out" 2>"$out.err"
  local rc=$?
  [ $rc -eq 0 ] || echo "     (lattice replay $* exited $rc: $(head -c 500 "$out.err"))"
  return $rc
}

echo "# resumability"
"$lattice" gen --shards 3000 --blades 8 --seed 5 -o all.ndjson || fail "gen"
head -n 2000 all.ndjson >part.ndjson
replay_json r1.json all.ndjson --state full
expect_eq "first replay reads every line" "$(summary r1.json lines)/$(summary r1.json applied)" \
  "3000/3000"
replay_json r2.json all.ndjson --state full
expect_eq "second replay of the same file reads nothing (lines/applied)" \
  "$(summary r2.json lines)/$(summary r2.json applied)" "0/0"
"$lattice" state dump --state full >full.dump || fail "state dump"

echo "# appending to a recording"
replay_json a1.json part.ndjson --state grow
expect_eq "replay of the first 2000 lines" "$(summary a1.json lines)" "2000"
tail -n +2001 all.ndjson >>part.ndjson
replay_json a2.json part.ndjson --state grow
expect_eq "after appending 1000 lines only those are read (lines/applied/duplicates)" \
  "$(summary a2.json lines)/$(summary a2.json applied)/$(summary a2.json duplicates)" "1000/1000/0"
"$lattice" state dump --state grow >grow.dump
same_dump "appended replay equals one replay of the whole file" grow.dump full.dump

echo "# --memory-budget"
# 0 bytes: every written page leaves memory after every commit (31 commits of 97 shards), and
# every later shard below a paged-out root reads it back. The state must be the same.
"$lattice" replay all.ndjson --state budget --memory-budget 0 --batch 97 --progress 1000 \
  >budget.out 2>budget.err || fail "replay --memory-budget 0: $(head -c 300 budget.err)"
"$lattice" state dump --state budget >budget.dump
same_dump "replay with --memory-budget 0 equals the replay without a budget" budget.dump full.dump
pages=$(awk '/^progress:/ {out=$17; in_=$19} END {print out + 0, in_ + 0}' budget.err)
read -r pages_out pages_in <<<"$pages"
if [ "${pages_out:-0}" -gt 0 ] && [ "${pages_in:-0}" -gt 0 ]; then
  ok "pages went out and were read back ($pages_out out, $pages_in in)"
else fail "--memory-budget 0 paged nothing out or read nothing back: '$pages' ($(tail -n 1 budget.err))"; fi
printf 'memory_budget: 64MiB\n' >budget.yaml
replay_json b2.json all.ndjson --state budget --config budget.yaml
expect_eq "a rerun with the config key memory_budget reads nothing new" "$(summary b2.json lines)" "0"

echo "# stdin"
replay_json s1.json - --state stdin <all.ndjson
expect_eq "'-' reads stdin" "$(summary s1.json lines)/$(summary s1.json applied)" "3000/3000"
"$lattice" state dump --state stdin >stdin.dump
same_dump "stdin replay equals the file replay" stdin.dump full.dump

echo "# .zst recordings"
zstd -q all.ndjson -o all.ndjson.zst || fail "zstd"
replay_json z1.json all.ndjson.zst --state zst
expect_eq ".zst replay reads every line" "$(summary z1.json lines)/$(summary z1.json applied)" \
  "3000/3000"
"$lattice" state dump --state zst >zst.dump
same_dump ".zst replay equals the plain replay" zst.dump full.dump
replay_json z2.json all.ndjson.zst --state zst
expect_eq "second .zst replay reads nothing" "$(summary z2.json lines)" "0"

echo "# dead letters"
{
  head -n 10 all.ndjson
  echo 'this is not json'
  echo '{"blade":"b-x","seq":1,"ts":1732350000005,"shard":[1,2]}'
  echo '{"blade":"b-x","seq":2,"ts":1732350000006,"shard":{"a":{"$bogus":1}}}'
} >bad.ndjson
replay_json d1.json bad.ndjson --state dl --dead-letter "$tmp/letters.ndjson"
expect_eq "bad lines are counted" "$(summary d1.json bad)/$(summary d1.json applied)" "3/10"
if [ -f letters.ndjson ]; then
  expect_eq "--dead-letter file holds one line per rejected line" \
    "$(wc -l <letters.ndjson | tr -d ' ')" "3"
  if jq -e -s 'all(.[]; .outcome == "bad" and (.reason | length > 0) and (.line | type == "number")
      and (.text | type == "string"))' letters.ndjson >/dev/null; then
    ok "dead letters are JSON with outcome, reason, line and text"
  else
    fail "dead letters malformed: $(head -c 600 letters.ndjson)"
  fi
  expect_eq "dead letters name the right lines" \
    "$(jq -r -s 'map(.line) | join(",")' letters.ndjson)" "11,12,13"
else
  fail "--dead-letter file $tmp/letters.ndjson was not written"
fi
if [ -s dl/dead-letter.ndjson ]; then
  fail "with --dead-letter, the default dl/dead-letter.ndjson was written too"
else
  ok "the default dead-letter file is not used when --dead-letter is given"
fi
replay_json d2.json bad.ndjson --state dl2
expect_eq "without --dead-letter, rejected lines go to STATE/dead-letter.ndjson" \
  "$(wc -l <dl2/dead-letter.ndjson 2>/dev/null | tr -d ' ')" "3"
"$lattice" replay bad.ndjson --state strict --strict >strict.out 2>strict.err
rc=$?
if [ $rc -ne 0 ] && grep -q 'bad.ndjson:11' strict.err; then
  ok "--strict stops at line 11 with a non-zero exit"
else
  fail "--strict: expected a non-zero exit naming bad.ndjson:11, got $rc: $(cat strict.err)"
fi

echo "# state get / scan / dump on a hand-written recording"
cat >small.ndjson <<'EOF'
{"blade":"a","seq":1,"ts":1000,"shard":{"nodes":{"a":{"status":"up","load":3}},"hits":{"$inc":2}}}
{"blade":"b","seq":1,"ts":1001,"shard":{"nodes":{"b":{"status":"down"}},"hits":{"$inc":5},"peak":{"$max":7}}}
{"blade":"a","seq":2,"ts":1002,"shard":{"nodes":{"a":{"status":"busy"}},"peak":{"$max":4},"tags":["x","y"],"k.dot":{"$$lit":true}}}
{"blade":"b","seq":2,"ts":1003,"shard":{"nodes":{"b":null},"low":{"$min":-2.5}}}
EOF
replay_json small.json small.ndjson --state small
# get_eq PATH EXPECTED
get_eq() {
  local out
  out=$("$lattice" state get "$1" --state small 2>&1)
  local rc=$?
  if [ $rc -eq 0 ] && [ "$out" == "$2" ]; then ok "state get $1 = $2"
  else fail "state get $1: expected '$2' (exit 0), got '$out' (exit $rc)"; fi
}
get_eq nodes.a.status '"busy"'
get_eq nodes.a.load 3
get_eq nodes '{"a":{"load":3,"status":"busy"}}'
get_eq hits 7
get_eq peak 7
get_eq low -2.5
get_eq tags '["x","y"]'
get_eq 'k\.dot.$lit' true
for missing in nodes.b nodes.a.nothing nothing.at.all; do
  "$lattice" state get "$missing" --state small >get.out 2>get.err
  rc=$?
  if [ $rc -eq 1 ] && [ ! -s get.out ]; then ok "state get of missing $missing exits 1"
  else fail "state get of missing $missing: expected exit 1 and no output, got $rc '$(cat get.out)'"; fi
done
expect_eq "state scan nodes" "$("$lattice" state scan nodes --state small 2>&1)" \
  "$(printf 'nodes.a.load\t3\nnodes.a.status\t"busy"')"
expect_eq "state scan of everything" "$("$lattice" state scan --state small 2>&1)" \
  "$(printf 'hits\t7\nk\\.dot.$lit\ttrue\nlow\t-2.5\nnodes.a.load\t3\nnodes.a.status\t"busy"\npeak\t7\ntags\t["x","y"]')"
expect_eq "state scan of a missing prefix prints nothing" \
  "$("$lattice" state scan nodes.b --state small 2>&1; echo "exit $?")" "exit 0"
expect_eq "state dump" "$("$lattice" state get nodes --state small 2>&1 | jq -c .)" \
  "$("$lattice" state dump --state small | jq -c .nodes)"
"$lattice" state get 'bad\escape' --state small >/dev/null 2>get.err
rc=$?
if [ $rc -ne 0 ] && [ -s get.err ]; then ok "a malformed path is an error ($(head -n 1 get.err))"
else fail "state get of a malformed path: expected an error, got exit $rc"; fi
"$lattice" state dump --state "$tmp/no-such-state" >/dev/null 2>get.err
rc=$?
if [ $rc -ne 0 ] && [ -s get.err ]; then ok "state dump of a missing directory is an error"
else fail "state dump of a missing directory: expected an error, got exit $rc"; fi

echo "# --help"
for cmd in "" replay state "state get" "state scan" "state dump" gen; do
  # shellcheck disable=SC2086
  out=$("$lattice" $cmd --help 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && grep -q "Usage: lattice${cmd:+ $cmd}" <<<"$out"; then
    ok "lattice${cmd:+ $cmd} --help"
  else
    fail "lattice${cmd:+ $cmd} --help: exit $rc, output: $(head -c 300 <<<"$out")"
  fi
done

echo "# bad flags"
# expect_error NAME PATTERN ARGS...: non-zero exit, stderr matching PATTERN
expect_error() {
  local name=$1 pattern=$2
  shift 2
  "$lattice" "$@" >err.out 2>err.txt
  local rc=$?
  if [ $rc -ne 0 ] && grep -qiE -- "$pattern" err.txt; then ok "$name (exit $rc: $(head -n 1 err.txt))"
  else fail "$name: expected a non-zero exit and stderr matching '$pattern', got exit $rc: $(cat err.txt err.out | head -c 300)"; fi
}
expect_error "unknown flag" "--bogus" replay all.ndjson --state flags --bogus
expect_error "missing --state" "--state" replay all.ndjson
expect_error "non-numeric --shards" "shards" gen --shards many
expect_error "bad --allowed-lateness" "allowed-lateness" replay all.ndjson --state flags \
  --allowed-lateness soon
# CLI11 answers "A subcommand is required" here; naming the unknown word would be clearer.
expect_error "bad --memory-budget" "memory-budget.*'2 GiB' is not a memory size" replay all.ndjson \
  --state flags --memory-budget '2 GiB'
printf 'memory_budget: lots\n' >bad-budget.yaml
expect_error "bad memory_budget in --config" "bad-budget.yaml: memory_budget: 'lots'" replay all.ndjson \
  --state flags --config bad-budget.yaml
expect_error "unknown subcommand" "frobnicate|subcommand" frobnicate
expect_error "no subcommand" "subcommand" 
expect_error "missing recording" "no-such-file" replay "$tmp/no-such-file.ndjson" --state flags

echo "# a state directory in use"
"$lattice" gen --shards 1000000 --blades 64 --seed 9 -o big.ndjson || fail "gen big"
"$lattice" replay big.ndjson --state busy --json >busy.json 2>busy.err &
bg_pid=$!
# The replayer creates its dead-letter file only after the store is open and locked.
for _ in $(seq 1 600); do
  [ -e busy/dead-letter.ndjson ] && break
  kill -0 "$bg_pid" 2>/dev/null || break
  sleep 0.05
done
if [ -e busy/dead-letter.ndjson ] && kill -0 "$bg_pid" 2>/dev/null; then
  "$lattice" replay all.ndjson --state busy >second.out 2>second.err
  rc=$?
  still_running=no
  kill -0 "$bg_pid" 2>/dev/null && still_running=yes
  if [ $rc -ne 0 ] && grep -qiE 'in use|another process|lock' second.err; then
    ok "a second replay on a busy state dir fails: $(head -n 1 second.err)"
  else
    fail "a second replay on a busy state dir: expected a non-zero exit and a message about the directory being in use, got exit $rc: $(cat second.err second.out | head -c 400)"
  fi
  [ $still_running == yes ] || fail "the first replay finished before the second was refused (inconclusive)"
  # Readers open the directory read-only and are not locked out (DESIGN.md §5).
  if "$lattice" state dump --state busy >busy.dump 2>busy-dump.err && jq -e 'type == "object"' \
      busy.dump >/dev/null; then
    ok "state dump works while a replay holds the directory"
  else
    fail "state dump while a replay holds the directory: $(head -c 300 busy-dump.err)"
  fi
  wait "$bg_pid"
  rc=$?
  bg_pid=""
  expect_eq "the first replay completes undisturbed (exit/lines)" \
    "$rc/$(summary busy.json lines)" "0/1000000"
else
  fail "the background replay did not start (or finished at once): $(cat busy.err)"
fi

if [ $failures -ne 0 ]; then
  echo "replay_cli_test: $failures check(s) FAILED"
  exit 1
fi
echo "replay_cli_test: all checks passed"
