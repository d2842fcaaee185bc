#!/usr/bin/env bash
# Bad-input corpus test of `lattice replay` (DESIGN.md §2.3): bad lines of every kind, interleaved
# with good ones, must each land in the dead-letter file with the right line, offset, outcome and
# reason, while every good line is applied (the dump equals the expected one), the summary counts
# match, --strict stops at the first bad line, and a 100 MB line is skipped with bounded memory.
#
# Usage: bash bad_corpus_test.sh <path-to-lattice-binary> <tests/data dir>
# Inputs: <data>/bad/mixed.ndjson, mixed.expected.json (canonical dump of its good lines) and
# mixed.reasons.txt (line<TAB>outcome<TAB>reason substring, alternatives separated by '|'). The 10,000-deep line and the
# 100 MB line are generated here at run time, in a temp dir that is removed on exit.
set -uo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <lattice-binary> <tests/data dir>" >&2
  exit 2
fi
LATTICE=$1
DATA=$2
BAD=$DATA/bad
MIXED=$BAD/mixed.ndjson
EXPECTED=$BAD/mixed.expected.json
REASONS=$BAD/mixed.reasons.txt
MAX_RSS_KB=$((200 * 1024))
BIG_BYTES=$((100 * 1024 * 1024))
DEEP=10000

for tool in jq cmp; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "FAIL: $tool is required" >&2
    exit 1
  fi
done
for f in "$LATTICE" "$MIXED" "$EXPECTED" "$REASONS"; do
  if [[ ! -e $f ]]; then
    echo "FAIL: missing $f" >&2
    exit 1
  fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/lattice_bad_corpus.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM HUP PIPE

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
ok() { echo "ok: $*"; }
# ok_if_none_since COUNT MESSAGE: prints ok only if no check failed since failures was COUNT.
ok_if_none_since() { [[ $failures -eq $1 ]] && ok "$2"; }

# ---------------------------------------------------------------------------------------------
# Generated inputs (never committed): a line nested 10,000 deep and a 100 MB line, each between
# good lines whose effects land under "gen".
T=1732350000000
GEN_EXPECTED='{"big_after":2,"big_before":1,"deep_after":true,"deep_before":true}'
{
  printf '{"blade":"gen-deep","seq":1,"ts":%d,"shard":{"gen":{"deep_before":true}}}\n' $((T + 5))
  printf '{"blade":"gen-deep","seq":2,"ts":%d,"shard":' $((T + 6))
  yes '{"a":' | head -n "$DEEP" | tr -d '\n'
  printf '1'
  yes '}' | head -n "$DEEP" | tr -d '\n'
  printf '}\n'
  printf '{"blade":"gen-deep","seq":3,"ts":%d,"shard":{"gen":{"deep_after":true}}}\n' $((T + 7))
} >"$TMP/deep.ndjson"
{
  printf '{"blade":"gen-big","seq":1,"ts":%d,"shard":{"gen":{"big_before":1}}}\n' $((T + 8))
  printf '{"blade":"gen-big","seq":2,"ts":%d,"shard":{"blob":"' $((T + 9))
  head -c "$BIG_BYTES" /dev/zero | tr '\0' 'x'
  printf '"}}\n'
  printf '{"blade":"gen-big","seq":3,"ts":%d,"shard":{"gen":{"big_after":{"$inc":2}}}}\n' $((T + 95))
} >"$TMP/big.ndjson"
# Expected rejects of the generated files, in the format of mixed.reasons.txt.
printf '2\tbad\tnesting deeper than 64\n' >"$TMP/deep.reasons.txt"
printf '2\tbad\texceeds the limit\n' >"$TMP/big.reasons.txt"
ok "generated deep.ndjson ($(wc -c <"$TMP/deep.ndjson") bytes) and big.ndjson ($(wc -c <"$TMP/big.ndjson") bytes)"

# ---------------------------------------------------------------------------------------------
# Helpers

# show_difference EXPECTED_FILE GOT_FILE: where two dumps first differ, with some context.
show_difference() {
  local at
  at=$(cmp "$1" "$2" 2>&1 | grep -o 'byte [0-9]*' | grep -o '[0-9]*')
  if [[ -z $at ]]; then
    echo "  $(cmp "$1" "$2" 2>&1)" >&2
    return
  fi
  local from=$((at > 80 ? at - 80 : 1))
  echo "  first difference at byte $at:" >&2
  echo "  expected: ...$(tail -c +"$from" "$1" | head -c 240)" >&2
  echo "  got:      ...$(tail -c +"$from" "$2" | head -c 240)" >&2
}

# Prints the non-comment entries of a reasons file.
entries() { grep -v '^#' "$1" | grep -v '^[[:space:]]*$'; }
# Counts the entries of a reasons file with outcome $2.
count_outcome() { entries "$1" | awk -F'\t' -v o="$2" '$2 == o' | wc -l; }
# Non-blank lines of a recording (what the replayer counts as lines).
count_lines() { LC_ALL=C grep -c -v $'^[ \t\r]*$' "$1"; }

# check_summary NAME SUMMARY_FILE LINES APPLIED DUPLICATES CONFLICTS LATE BAD
check_summary() {
  local name=$1 file=$2
  shift 2
  if ! jq -e 'type == "object"' "$file" >/dev/null 2>&1; then
    fail "$name: --json did not print one JSON object: $(head -c 500 "$file")"
    return
  fi
  local key i=0 want got
  local -a wants=("$@")
  for key in lines applied duplicates conflicts late bad; do
    want=${wants[$i]}
    got=$(jq -r ".$key // \"missing\"" "$file")
    if [[ $got != "$want" ]]; then
      fail "$name: summary $key = $got, expected $want (summary: $(cat "$file"))"
    fi
    i=$((i + 1))
  done
  for key in seconds shards_per_s; do
    if ! jq -e ".$key | type == \"number\"" "$file" >/dev/null; then
      fail "$name: summary has no number '$key': $(cat "$file")"
    fi
  done
}

# check_dead_letters NAME DEAD_FILE RECORDING REASONS_FILE
# Every rejected line of RECORDING listed in REASONS_FILE (outcome bad/conflict/late) has exactly
# one record with its line number, byte offset, length, outcome, reason substring and text; no
# other line of RECORDING has one.
check_dead_letters() {
  local name=$1 dead=$2 rec=$3 reasons=$4
  local base
  base=$(basename "$rec")
  local records="$TMP/$name.$base.records" table="$TMP/$name.$base.table"
  # Records of this recording (the source may be absolute and canonicalised: match the name).
  if ! jq -c --arg b "$base" 'select(.source | type == "string" and (endswith("/" + $b) or . == $b))' \
      "$dead" >"$records" 2>"$TMP/jq.err"; then
    fail "$name: dead-letter file $dead is not one JSON object per line: $(cat "$TMP/jq.err")"
    return
  fi
  # One row per record: line, all fields present, outcome, offset, length, reason.
  jq -r '[.line, ([has("source", "line", "offset", "outcome", "reason", "text", "length")] | all),
          .outcome, .offset, .length, (.reason | tostring | gsub("[\t\n]"; " "))] | @tsv' \
    "$records" >"$table"
  local want_count got_count
  want_count=$(entries "$reasons" | awk -F'\t' '$2 != "duplicate"' | wc -l)
  got_count=$(wc -l <"$records")
  if [[ $got_count -ne $want_count ]]; then
    fail "$name: $got_count dead-letter records for $base, expected $want_count; lines: $(cut -f1 "$table" | tr '\n' ' ')"
  fi
  local n outcome substr row r_line r_all r_outcome r_offset r_length r_reason offset length
  while IFS=$'\t' read -r n outcome substr; do
    [[ $outcome == duplicate ]] && continue
    row=$(awk -F'\t' -v n="$n" '$1 == n' "$table")
    if [[ -z $row ]]; then
      fail "$name: $base:$n ($outcome, '$substr') is not in the dead-letter file"
      continue
    fi
    if [[ $(printf '%s\n' "$row" | wc -l) -ne 1 ]]; then
      fail "$name: $base:$n has more than one dead-letter record"
      row=$(printf '%s\n' "$row" | head -n 1)
    fi
    IFS=$'\t' read -r r_line r_all r_outcome r_offset r_length r_reason <<<"$row"
    [[ $r_all == true ]] ||
      fail "$name: $base:$n record lacks one of source, line, offset, outcome, reason, text, length"
    [[ $r_outcome == "$outcome" ]] || fail "$name: $base:$n outcome $r_outcome, expected $outcome"
    # The substring may list alternatives separated by '|'.
    local alt matched=false
    IFS='|' read -r -a alts <<<"$substr"
    for alt in "${alts[@]}"; do
      [[ $r_reason == *"$alt"* ]] && matched=true
    done
    $matched || fail "$name: $base:$n reason '$r_reason' does not contain '$substr'"
    # Offset and length (without the newline and a CR) of the line, from the recording itself.
    # (Not awk: mawk is quadratic on a 100 MB line.)
    offset=$(head -n $((n - 1)) "$rec" | wc -c)
    length=$(tail -c +$((offset + 1)) "$rec" | head -n 1 | LC_ALL=C tr -d '\r\n' | wc -c)
    [[ $r_offset == "$offset" ]] || fail "$name: $base:$n offset $r_offset, expected $offset"
    [[ $r_length == "$length" ]] || fail "$name: $base:$n length $r_length, expected $length"
    # The text: the original line, or (for a long line) at least its first 1 KiB. Bytes that are
    # not UTF-8 cannot travel in JSON; for such lines compare the ASCII bytes only.
    local text_file="$TMP/text" orig_file="$TMP/orig"
    jq -j --argjson n "$n" 'select(.line == $n) | .text' "$records" | head -c 1048576 >"$text_file"
    tail -c +$((offset + 1)) "$rec" | head -c "$((length < 1048576 ? length : 1048576))" >"$orig_file"
    if ! iconv -f UTF-8 -t UTF-8 "$orig_file" >/dev/null 2>&1; then
      LC_ALL=C tr -d '\200-\377' <"$text_file" >"$text_file.a" && mv "$text_file.a" "$text_file"
      LC_ALL=C tr -d '\200-\377' <"$orig_file" >"$orig_file.a" && mv "$orig_file.a" "$orig_file"
    fi
    local text_len orig_len min_len
    text_len=$(wc -c <"$text_file")
    orig_len=$(wc -c <"$orig_file")
    min_len=$((orig_len < 1024 ? orig_len : 1024))
    if [[ $text_len -lt $min_len || $text_len -gt $orig_len ]] ||
        ! cmp -s -n "$text_len" "$text_file" "$orig_file"; then
      fail "$name: $base:$n text is not the line (or its first 1 KiB): '$(head -c 200 "$text_file")'"
    fi
  done < <(entries "$reasons")
}

# ---------------------------------------------------------------------------------------------
# The reasons file itself: one entry per line number, known outcomes.
dups=$(entries "$REASONS" | cut -f1 | sort | uniq -d | tr '\n' ' ')
[[ -z $dups ]] || fail "mixed.reasons.txt lists line(s) $dups more than once"
badrows=$(entries "$REASONS" | awk -F'\t' 'NF < 3 || $1 !~ /^[0-9]+$/ || $2 !~ /^(bad|conflict|late|duplicate)$/' | head -n 3)
[[ -z $badrows ]] || fail "malformed entries in mixed.reasons.txt: $badrows"

# Expected counts of mixed.ndjson, from its reasons file.
M_LINES=$(count_lines "$MIXED")
M_BAD=$(count_outcome "$REASONS" bad)
M_CONFLICTS=$(count_outcome "$REASONS" conflict)
M_LATE=$(count_outcome "$REASONS" late)
M_DUPS=$(count_outcome "$REASONS" duplicate)
M_APPLIED=$((M_LINES - M_BAD - M_CONFLICTS - M_LATE - M_DUPS))

# 1. mixed.ndjson alone: exit 0, summary, dump byte-equal to the expected, dead letters.
S1=$TMP/state1
if "$LATTICE" replay "$MIXED" --state "$S1" --json >"$TMP/run1.out" 2>"$TMP/run1.err"; then
  ok "replay mixed.ndjson exits 0"
else
  fail "replay mixed.ndjson exited $? (stderr: $(head -c 1000 "$TMP/run1.err"))"
fi
check_summary run1 "$TMP/run1.out" "$M_LINES" "$M_APPLIED" "$M_DUPS" "$M_CONFLICTS" "$M_LATE" "$M_BAD"
"$LATTICE" state dump --state "$S1" >"$TMP/dump1.json" 2>"$TMP/dump1.err" ||
  fail "state dump exited $? (stderr: $(head -c 1000 "$TMP/dump1.err"))"
if cmp -s "$TMP/dump1.json" "$EXPECTED"; then
  ok "dump of mixed.ndjson equals mixed.expected.json"
else
  fail "dump of mixed.ndjson differs from mixed.expected.json"
  show_difference "$EXPECTED" "$TMP/dump1.json"
fi
if [[ -f $S1/dead-letter.ndjson ]]; then
  f0=$failures
  check_dead_letters run1 "$S1/dead-letter.ndjson" "$MIXED" "$REASONS"
  ok_if_none_since "$f0" "dead letters of mixed.ndjson: $(wc -l <"$S1/dead-letter.ndjson") records, each as expected"
else
  fail "no default dead-letter file $S1/dead-letter.ndjson"
fi

# 2. Replaying the same file again applies nothing and dead-letters nothing twice.
before=$(wc -l <"$S1/dead-letter.ndjson" 2>/dev/null || echo 0)
f0=$failures
if "$LATTICE" replay "$MIXED" --state "$S1" --json >"$TMP/run2.out" 2>"$TMP/run2.err"; then
  [[ $(jq -r .applied "$TMP/run2.out") == 0 ]] ||
    fail "second replay applied $(jq -r .applied "$TMP/run2.out") shards, expected 0"
  [[ $(wc -l <"$S1/dead-letter.ndjson") == "$before" ]] ||
    fail "second replay added dead letters ($before -> $(wc -l <"$S1/dead-letter.ndjson"))"
  "$LATTICE" state dump --state "$S1" | cmp -s - "$EXPECTED" ||
    fail "second replay changed the state"
  ok_if_none_since "$f0" "second replay of mixed.ndjson is a no-op"
else
  fail "second replay exited $? (stderr: $(head -c 1000 "$TMP/run2.err"))"
fi

# 3. mixed + deep + big together, with an explicit dead-letter file, memory measured.
S3=$TMP/state3
DEAD3=$TMP/dead3.ndjson
cmd=("$LATTICE" replay "$MIXED" "$TMP/deep.ndjson" "$TMP/big.ndjson" --state "$S3"
     --dead-letter "$DEAD3" --json)
rss_kb=""
if [[ -x /usr/bin/time ]] && /usr/bin/time -v true >/dev/null 2>&1; then
  /usr/bin/time -v -o "$TMP/time3.txt" "${cmd[@]}" >"$TMP/run3.out" 2>"$TMP/run3.err"
  rc=$?
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$TMP/time3.txt")
else
  # No GNU time: sample the RSS with ps while it runs.
  "${cmd[@]}" >"$TMP/run3.out" 2>"$TMP/run3.err" &
  pid=$!
  rss_kb=0
  while kill -0 "$pid" 2>/dev/null; do
    r=$(ps -o rss= -p "$pid" 2>/dev/null | tr -d ' ')
    [[ -n $r && $r -gt $rss_kb ]] && rss_kb=$r
    sleep 0.05
  done
  wait "$pid"
  rc=$?
  echo "note: /usr/bin/time -v unavailable; max RSS sampled with ps every 50 ms"
fi
if [[ $rc -eq 0 ]]; then
  ok "replay mixed + deep + big exits 0"
else
  fail "replay mixed + deep + big exited $rc (stderr: $(head -c 1000 "$TMP/run3.err"))"
fi
G_LINES=$((M_LINES + 6))
check_summary run3 "$TMP/run3.out" "$G_LINES" $((M_APPLIED + 4)) "$M_DUPS" "$M_CONFLICTS" "$M_LATE" $((M_BAD + 2))
if [[ -n $rss_kb && $rss_kb -gt 0 ]]; then
  if [[ $rss_kb -lt $MAX_RSS_KB ]]; then
    ok "max RSS with the 100 MB line: $((rss_kb / 1024)) MB (< $((MAX_RSS_KB / 1024)) MB)"
  else
    fail "max RSS with the 100 MB line: $((rss_kb / 1024)) MB, limit $((MAX_RSS_KB / 1024)) MB"
  fi
else
  echo "note: max RSS could not be measured; memory check skipped"
fi
"$LATTICE" state dump --state "$S3" >"$TMP/dump3.json" 2>"$TMP/dump3.err" ||
  fail "state dump exited $? (stderr: $(head -c 1000 "$TMP/dump3.err"))"
gen=$("$LATTICE" state get gen --state "$S3" 2>&1)
if [[ $gen == "$GEN_EXPECTED" ]]; then
  ok "good lines around the deep and the 100 MB line are applied"
else
  fail "state at 'gen' is '$gen', expected '$GEN_EXPECTED'"
fi
# The dump is the expected one with the "gen" member added (string surgery, so big integers are
# compared exactly, which jq 1.6 cannot do).
dump3=$(cat "$TMP/dump3.json")
rest=${dump3/,\"gen\":$GEN_EXPECTED/}
if [[ $rest == "$dump3" ]]; then
  rest=${dump3/\"gen\":$GEN_EXPECTED,/}
fi
if [[ $rest == "$(cat "$EXPECTED")" ]]; then
  ok "dump of mixed + deep + big equals the expected one"
else
  fail "dump of mixed + deep + big differs from mixed.expected.json plus \"gen\":$GEN_EXPECTED"
  printf '%s\n' "$rest" >"$TMP/dump3.rest"
  show_difference "$EXPECTED" "$TMP/dump3.rest"
fi
if [[ -f $DEAD3 ]]; then
  f0=$failures
  check_dead_letters run3 "$DEAD3" "$MIXED" "$REASONS"
  check_dead_letters run3 "$DEAD3" "$TMP/deep.ndjson" "$TMP/deep.reasons.txt"
  check_dead_letters run3 "$DEAD3" "$TMP/big.ndjson" "$TMP/big.reasons.txt"
  ok_if_none_since "$f0" "dead letters of the combined run: $(wc -l <"$DEAD3") records, each as expected"
  [[ -e $S3/dead-letter.ndjson && -s $S3/dead-letter.ndjson ]] &&
    fail "--dead-letter given, but $S3/dead-letter.ndjson was written too"
else
  fail "no dead-letter file at --dead-letter $DEAD3"
fi

# 4. --strict exits non-zero at the first bad line, naming it.
first_bad=$(entries "$REASONS" | awk -F'\t' '$2 != "duplicate" {print $1; exit}')
if "$LATTICE" replay "$MIXED" --state "$TMP/state4" --strict >"$TMP/run4.out" 2>"$TMP/run4.err"; then
  fail "replay --strict of mixed.ndjson exited 0"
else
  if grep -q "mixed.ndjson:$first_bad\b" "$TMP/run4.err" "$TMP/run4.out"; then
    ok "replay --strict exits non-zero at mixed.ndjson:$first_bad"
  else
    fail "replay --strict exited non-zero but did not name mixed.ndjson:$first_bad: $(head -c 1000 "$TMP/run4.err")"
  fi
fi

# 5. --strict on the good lines only (including the duplicate redelivery) exits 0 with the same
# state.
awk -F'\t' 'NR == FNR { if ($0 !~ /^#/ && ($2 == "bad" || $2 == "conflict" || $2 == "late")) skip[$1] = 1; next }
            !(FNR in skip)' "$REASONS" "$MIXED" >"$TMP/good.ndjson"
if "$LATTICE" replay "$TMP/good.ndjson" --state "$TMP/state5" --strict >"$TMP/run5.out" 2>"$TMP/run5.err"; then
  if "$LATTICE" state dump --state "$TMP/state5" | cmp -s - "$EXPECTED"; then
    ok "replay --strict of the good lines exits 0 with the expected state"
  else
    fail "replay --strict of the good lines: dump differs from mixed.expected.json"
  fi
else
  fail "replay --strict of the good lines exited non-zero: $(head -c 1000 "$TMP/run5.err")"
fi

if [[ $failures -gt 0 ]]; then
  echo "bad_corpus_test: $failures check(s) failed" >&2
  exit 1
fi
echo "bad_corpus_test: all checks passed"
