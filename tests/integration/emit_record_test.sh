#!/usr/bin/env bash
# `lattice emit` and `lattice record` on a dev broker (`lattice broker`, TCP on 127.0.0.1):
# - a `lattice gen` recording emitted, recorded back (.zst) and compared field by field with jq;
#   replaying the recording gives the same state dump as replaying the original;
# - kcat -P -K blades (no seq header: offset stands in), key-less messages (blade
#   <default>/<partition>), and bad messages (invalid JSON, non-object, operator at the top) kept
#   as "raw" lines that replay rejects as bad shards;
# - --from OFFSET and --from @TIMESTAMP;
# - bare bodies with a seq file: seqs keep increasing across a kill -9 of `lattice emit`;
# - invalid lines: line-numbered errors, counts, --strict;
# - a mapped file (-f) and stdin give the same lines, reasons and shards.
#
#   bash emit_record_test.sh LATTICE_BINARY
set -uo pipefail

lattice=${1:?usage: emit_record_test.sh LATTICE_BINARY}
lattice=$(realpath "$lattice")
for tool in kcat jq zstd; do
  command -v "$tool" >/dev/null || { echo "FAIL - needs $tool"; exit 1; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-emit-record.XXXXXX")
broker_pid=""
bg_pid=""
cleanup() {
  [ -n "$bg_pid" ] && kill -9 "$bg_pid" 2>/dev/null && wait "$bg_pid" 2>/dev/null
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp" || exit 1

failures=0
ok() { echo "ok   - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }
expect_eq() { if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: expected '$3', got '$2'"; fi; }

"$lattice" broker --no-stdin --no-default-topics --topic lattice.shards:16 --topic kc:4 \
  --topic bad:2 --topic seqs:1 --topic many:4 --topic many2:4 --topic edge1:4 --topic edge2:4 \
  --topic edge3:4 --bootstrap-file bs.txt >/dev/null 2>broker.err &
broker_pid=$!
for _ in $(seq 1 100); do [ -s bs.txt ] && break; sleep 0.1; done
[ -s bs.txt ] || { fail "broker did not start: $(cat broker.err)"; exit 1; }
export LATTICE_BROKERS
LATTICE_BROKERS=$(cat bs.txt)

# --- A generated recording, emitted and recorded back. ---
"$lattice" gen --shards 20000 --blades 12 --seed 7 -o gen.ndjson
"$lattice" emit -f gen.ndjson --json >emit.json 2>emit.err || fail "emit failed: $(cat emit.err)"
expect_eq "emit: all delivered" "$(jq -r '"\(.sent) \(.delivered) \(.failed) \(.invalid)"' emit.json)" \
  "20000 20000 0 0"
"$lattice" record -e -o rec.ndjson.zst --json 2>record.json || fail "record failed: $(cat record.json)"
expect_eq "record: all messages, all shards" "$(jq -r '"\(.messages) \(.shards) \(.bad)"' record.json)" \
  "20000 20000 0"
zstd -dc rec.ndjson.zst >rec.ndjson || fail "the .zst recording does not decompress"
jq -c '[.blade, .seq, .ts, .shard]' gen.ndjson | sort >want.txt
jq -c '[.blade, .seq, .ts, .shard]' rec.ndjson | sort >got.txt
cmp -s want.txt got.txt && ok "recorded envelopes = emitted envelopes (blade, seq, ts, shard)" \
  || fail "recorded envelopes differ from the emitted ones"
bad_prov=$(jq -c 'select(.topic != "lattice.shards" or (.partition | type) != "number" or (.offset | type) != "number")' rec.ndjson | wc -l)
expect_eq "every line has provenance" "$bad_prov" "0"
# One blade, one partition: provenance says so.
expect_eq "one partition per blade" "$(jq -r '"\(.blade) \(.partition)"' rec.ndjson | sort -u | wc -l)" "12"
"$lattice" replay gen.ndjson --state s-gen >/dev/null && "$lattice" state dump --state s-gen >dump-gen.json
"$lattice" replay rec.ndjson.zst --state s-rec >/dev/null && "$lattice" state dump --state s-rec >dump-rec.json
[ -s dump-gen.json ] && cmp -s dump-gen.json dump-rec.json && ok "replay(record(emit(gen))) = replay(gen)" \
  || fail "the recorded state differs from the generated one"

# --- kcat blades, key-less messages and bad messages. ---
printf 'k1|{"a":{"$inc":1}}\nk1|{"a":{"$inc":2}}\nk2|{"b":"x"}\n' | kcat -P -b "$LATTICE_BROKERS" -t kc -K '|'
printf '{"nokey":true}\n' | kcat -P -b "$LATTICE_BROKERS" -t kc
"$lattice" record -t kc -e --default-blade anon -o kc.ndjson 2>/dev/null
expect_eq "kcat messages recorded" "$(wc -l <kc.ndjson)" "4"
expect_eq "no header: seq = offset" \
  "$(jq -c 'select(.blade == "k1") | .seq == .offset' kc.ndjson | sort -u)" "true"
expect_eq "key-less message takes --default-blade/<partition>" \
  "$(jq -r 'select(.shard.nokey) | .blade == "anon/\(.partition)"' kc.ndjson)" "true"
printf 'b1|{"fine":1}\nb2|{oops\nb3|[1,2]\nb4|{"$inc":1}\n' | kcat -P -b "$LATTICE_BROKERS" -t bad -K '|'
printf '{"nokey":1}\n' | kcat -P -b "$LATTICE_BROKERS" -t bad
"$lattice" record -t bad -e -o bad.ndjson --json 2>bad.json
expect_eq "bad: 2 shards, 3 raw" "$(jq -r '"\(.shards) \(.bad)"' bad.json)" "2 3"
expect_eq "raw lines keep the value and a reason" \
  "$(jq -r 'select(.raw) | [.raw, (.reason | length > 0)] | @tsv' bad.ndjson | sort | tr '\t\n' ' ;')" \
  '[1,2] true;{"$inc":1} true;{oops true;'
expect_eq "key-less: blade unkeyed/<partition> by default" \
  "$(jq -r 'select(.shard.nokey) | .blade == "unkeyed/\(.partition)"' bad.ndjson)" "true"
"$lattice" replay bad.ndjson --state s-bad --json >bad-replay.json 2>/dev/null
expect_eq "replay: the raw lines are bad shards, the good one applies" \
  "$(jq -r '"\(.applied) \(.bad)"' bad-replay.json)" "2 3"

# --- --from OFFSET and @TIMESTAMP (the mock cannot look offsets up by time: fallback). ---
"$lattice" record -t lattice.shards -e --from 1000 -o from-offset.ndjson 2>/dev/null
expect_eq "--from 1000: nothing below offset 1000" \
  "$(jq -c 'select(.offset < 1000)' from-offset.ndjson | wc -l)" "0"
want=$(jq -r '"\(.partition) \(.offset)"' rec.ndjson | awk '$2 >= 1000' | wc -l)
expect_eq "--from 1000: everything at or above it" "$(wc -l <from-offset.ndjson)" "$want"
cut_ts=$(jq -r '.ts' gen.ndjson | sed -n 15000p)
"$lattice" record -t lattice.shards -e --from "@$cut_ts" -o from-ts.ndjson 2>/dev/null
expect_eq "--from @TS: exactly the shards at or after TS (ts grows in every partition)" \
  "$(wc -l <from-ts.ndjson) $(jq -c "select(.ts < $cut_ts)" from-ts.ndjson | wc -l)" "5001 0"

# --- Bare bodies with a seq file survive kill -9. ---
mkfifo bodies
"$lattice" emit -t seqs --blade solo --seq-file solo.seq --seq-block 10 -f bodies >/dev/null 2>&1 &
bg_pid=$!
exec 5>bodies
for i in $(seq 1 25); do echo "{\"n\":{\"\$inc\":$i}}" >&5; done
# Wait until all 25 arrived at the broker, then kill without a flush.
for _ in $(seq 1 100); do
  n=$(kcat -C -b "$LATTICE_BROKERS" -t seqs -e -o beginning -q 2>/dev/null | wc -l)
  [ "$n" -ge 25 ] && break; sleep 0.1
done
kill -9 "$bg_pid"; wait "$bg_pid" 2>/dev/null; bg_pid=""
exec 5>&-
"$lattice" emit -t seqs --blade solo --seq-file solo.seq --seq-block 10 '{"after":1}' '{"after":2}' >/dev/null
"$lattice" record -t seqs -e -o seqs.ndjson 2>/dev/null
expect_eq "27 bare bodies recorded" "$(wc -l <seqs.ndjson)" "27"
expect_eq "seqs strictly increase across the kill -9" \
  "$(jq -s '[.[].seq] | . as $s | [range(1; length) | $s[.] > $s[. - 1]] | all' seqs.ndjson)" "true"
expect_eq "the first run used 1..25" "$(jq -s '[.[0:25][].seq] == [range(1; 26)]' seqs.ndjson)" "true"

# --- Invalid lines. ---
printf '{"blade":"v","seq":1,"ts":5,"shard":{"ok":1}}\nnot json\n{"blade":"v","seq":2,"ts":5,"shard":[1]}\n{"blade":"v","seq":3,"ts":5,"shard":{"ok":2}}\n' >mixed.ndjson
"$lattice" emit -t seqs -f mixed.ndjson --json >mixed.json 2>mixed.err; rc=$?
expect_eq "invalid lines: exit 0 without --strict" "$rc" "0"
expect_eq "invalid lines counted, the rest sent" "$(jq -r '"\(.sent) \(.invalid)"' mixed.json)" "2 2"
grep -q "^lattice emit: line 2: " mixed.err && grep -q "^lattice emit: line 3: " mixed.err \
  && ok "errors name the line" || fail "line numbers missing: $(cat mixed.err)"
"$lattice" emit -t seqs -f mixed.ndjson --strict --json >strict.json 2>strict.err; rc=$?
expect_eq "--strict: exit 1" "$rc" "1"
expect_eq "--strict: stops at line 2" "$(jq -r '.sent' strict.json)" "1"
# A file is read and checked on a helper thread, in batches; a pipe line by line. Both send the
# same shards in the same order, and refuse the same lines with the same reasons.
"$lattice" gen --shards 5000 --blades 8 --seed 3 -o many.ndjson
awk 'NR % 1000 == 0 { print "{\"blade\":\"b-000\",\"seq\":" NR ",\"ts\":1,\"shard\":{\"a\":1,\"a\":2}}"; next } { print }' \
  many.ndjson >many-bad.ndjson
"$lattice" emit -t many --json <many-bad.ndjson >many.json 2>many.err; rc=$?
expect_eq "file: exit 0, 4995 sent, 5 invalid" "$rc $(jq -r '"\(.sent) \(.delivered) \(.invalid)"' many.json)" \
  "0 4995 4995 5"
cat many-bad.ndjson | "$lattice" emit -t many2 --json >many2.json 2>many2.err
expect_eq "pipe: 4995 sent, 5 invalid" "$(jq -r '"\(.sent) \(.invalid)"' many2.json)" "4995 5"
cmp -s many.err many2.err && grep -q "^lattice emit: line 5000: at (body): duplicate key 'a'$" many.err \
  && ok "file and pipe: the same reasons for the same lines" || fail "reasons differ: $(diff many.err many2.err)"
"$lattice" record -t many -e -o many-rec.ndjson 2>/dev/null
"$lattice" record -t many2 -e -o many2-rec.ndjson 2>/dev/null
expect_eq "file: each blade's shards in seq order in its partition" \
  "$(jq -s 'group_by(.blade) | map(sort_by(.offset) | [.[].seq] | . == sort) | all' many-rec.ndjson)" "true"
# A file's batches go out grouped by blade (docs/cli.md): each partition holds the same shards,
# each blade's in the same order; only blades sharing a partition interleave differently.
expect_eq "file and pipe: the same shards in the same partitions" \
  "$(jq -c '[.partition, .blade, .seq, .ts, .shard]' many-rec.ndjson | sort | md5sum)" \
  "$(jq -c '[.partition, .blade, .seq, .ts, .shard]' many2-rec.ndjson | sort | md5sum)"
expect_eq "file and pipe: each blade's shards at the same places in its order" \
  "$(jq -s -c 'group_by(.blade) | map(sort_by(.offset) | [.[] | [.partition, .blade, .seq]])' many-rec.ndjson | md5sum)" \
  "$(jq -s -c 'group_by(.blade) | map(sort_by(.offset) | [.[] | [.partition, .blade, .seq]])' many2-rec.ndjson | md5sum)"
"$lattice" emit -t many3 --in-order --json <many-bad.ndjson >many3.json 2>many3.err
"$lattice" record -t many3 -e -o many3-rec.ndjson 2>/dev/null
expect_eq "file with --in-order and pipe: the same shards at the same offsets" \
  "$(jq -c '[.partition, .offset, .blade, .seq, .ts, .shard]' many3-rec.ndjson | sort | md5sum)" \
  "$(jq -c '[.partition, .offset, .blade, .seq, .ts, .shard]' many2-rec.ndjson | sort | md5sum)"
# A file named with -f is mapped and its lines checked where they are; a pipe goes through
# LineReader line by line. Both give the same lines: blank and white-space lines skipped
# but counted, CRLF, an overlong line, bad lines, and last lines too close to the end for the
# check to read past them (a short last line without a newline).
{
  head -300 many.ndjson
  printf '\n   \t\n'
  sed -n 301,310p many.ndjson | sed 's/$/\r/'
  printf '{"blade":"b-001","seq":1,"ts":1,"shard":{"a":1,"a":2}}\n'
  printf '{"blade":"b-001","seq":9999,"ts":1,"shard":{"long":"%s"}}\n' "$(head -c 1200000 /dev/zero | tr '\0' 'x')"
  sed -n 311,400p many.ndjson
  printf '{"a":1}\n\n'
  printf '{"blade":"b-002","seq":9998,"ts":1,"shard":{"x":1}}\n{"blade":"z","seq":1,"ts":1,"shard":{}}'
} >edge.ndjson
"$lattice" emit -t edge1 -f edge.ndjson --json >edge1.json 2>edge1.err; rc1=$?
cat edge.ndjson | "$lattice" emit -t edge2 --json >edge2.json 2>edge2.err
expect_eq "mapped file: exit 0, 402 sent, 3 invalid" \
  "$rc1 $(jq -r '"\(.sent) \(.delivered) \(.envelopes) \(.invalid)"' edge1.json)" "0 402 402 402 3"
expect_eq "mapped file and pipe: the same counts" "$(jq -c 'del(.seconds, .shards_per_second)' edge1.json)" \
  "$(jq -c 'del(.seconds, .shards_per_second)' edge2.json)"
cmp -s edge1.err edge2.err && grep -q "^lattice emit: line 314: line longer than" edge1.err \
  && ok "mapped file and pipe: the same reasons for the same lines" \
  || fail "reasons differ: $(diff edge1.err edge2.err | head -5)"
"$lattice" record -t edge1 -e -o edge1-rec.ndjson 2>/dev/null
"$lattice" record -t edge2 -e -o edge2-rec.ndjson 2>/dev/null
expect_eq "mapped file and pipe: the same shards in the same partitions" \
  "$(jq -c '[.partition, .blade, .seq, .ts, .shard]' edge1-rec.ndjson | sort | md5sum)" \
  "$(jq -c '[.partition, .blade, .seq, .ts, .shard]' edge2-rec.ndjson | sort | md5sum)"
expect_eq "the short last line without a newline is sent" \
  "$(jq -c 'select(.blade == "z") | [.seq, .shard]' edge1-rec.ndjson)" '[1,{}]'
"$lattice" emit -t edge3 -f edge.ndjson --in-order --json >edge3.json 2>edge3.err
"$lattice" record -t edge3 -e -o edge3-rec.ndjson 2>/dev/null
expect_eq "mapped file --in-order and pipe: the same shards at the same offsets" \
  "$(jq -c '[.partition, .offset, .blade, .seq, .ts, .shard]' edge3-rec.ndjson | sort | md5sum)" \
  "$(jq -c '[.partition, .offset, .blade, .seq, .ts, .shard]' edge2-rec.ndjson | sort | md5sum)"
# --strict early in a big file: the checking thread is batches ahead and must be stopped.
cat gen.ndjson gen.ndjson gen.ndjson | awk 'NR == 3 { print "not json"; next } { print }' >strict-big.ndjson
"$lattice" emit -t many -f strict-big.ndjson --strict --json >strict-big.json 2>strict-big.err; rc=$?
expect_eq "--strict in a big file: exit 1 after 2 sent" "$rc $(jq -r '.sent' strict-big.json)" "1 2"
out=$("$lattice" emit -t seqs '{"a":1}' 2>&1); rc=$?
grep -q -- "--blade" <<<"$out" && ok "a bare body without --blade is explained" || fail "got: $out"
out=$("$lattice" emit -X linger.ms=banana --blade x '{"a":1}' 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "linger.ms=banana" <<<"$out" && ok "bad -X property: clear error" \
  || fail "bad -X: rc=$rc $out"
out=$(env -u LATTICE_BROKERS "$lattice" record -e 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "LATTICE_BROKERS" <<<"$out" && ok "no brokers: clear error" \
  || fail "no brokers: rc=$rc $out"
out=$("$lattice" record -t no.such.topic -e 2>&1); rc=$?
[ $rc -eq 1 ] && grep -qi "no.such.topic" <<<"$out" && ok "unknown topic: clear error" \
  || fail "unknown topic: rc=$rc $out"

[ $failures -eq 0 ] && echo "all emit/record checks passed" || echo "$failures check(s) failed"
exit $((failures > 0))
