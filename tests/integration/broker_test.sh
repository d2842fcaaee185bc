#!/usr/bin/env bash
# `lattice broker` as other tests use it: starts a 2-broker dev cluster on 127.0.0.1, produces and
# consumes with kcat over TCP, drives the control channel (TCP and stdin) to create a topic, move a
# leader, inject request errors and take a broker down and up, and checks nothing produced is lost.
#
#   bash broker_test.sh LATTICE_BINARY
#
# Every check prints "ok" or "FAIL"; the script exits 1 if any failed.
set -uo pipefail

lattice=${1:?usage: broker_test.sh LATTICE_BINARY}
lattice=$(realpath "$lattice")
command -v kcat >/dev/null || { echo "FAIL - needs kcat"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-broker.XXXXXX")
broker_pid=""
holder_pid=""
cleanup() {
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  [ -n "$holder_pid" ] && kill "$holder_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp" || exit 1

failures=0
ok() { echo "ok   - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }
expect_eq() { if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: expected '$3', got '$2'"; fi; }

# Bad flags are refused with a clear error.
out=$("$lattice" broker --brokers 0 2>&1); rc=$?
[ $rc -ne 0 ] && ok "--brokers 0 is refused ($out)" || fail "--brokers 0 accepted"
out=$("$lattice" broker --topic bad:0 --no-stdin 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "partition count" <<<"$out" && ok "--topic bad:0 is refused" \
  || fail "--topic bad:0: rc=$rc, $out"

# Start: stdin from a FIFO (held open by a sleeper), control over TCP on a free port.
mkfifo ctl
sleep 600 >ctl &
holder_pid=$!
"$lattice" broker --brokers 2 --topic lattice.shards:8 --topic extra:3 --control-port 0 \
  --bootstrap-file bs.txt --control-file control.txt <ctl >broker.out 2>broker.err &
broker_pid=$!
exec 4>ctl  # our own writer end for stdin commands
for _ in $(seq 1 100); do [ -s bs.txt ] && [ -s control.txt ] && break; sleep 0.1; done
[ -s bs.txt ] || { fail "no bootstrap file after 10 s: $(cat broker.err)"; exit 1; }
bootstrap=$(cat bs.txt)
expect_eq "first stdout line is the bootstrap address" "$(head -1 broker.out)" "$bootstrap"
expect_eq "second stdout line is the control address" "$(sed -n 2p broker.out)" \
  "control $(cat control.txt)"
[[ $bootstrap =~ ^127\.0\.0\.1:[0-9]+,127\.0\.0\.1:[0-9]+$ ]] && ok "two brokers on 127.0.0.1" \
  || fail "bootstrap '$bootstrap'"

meta=$(kcat -b "$bootstrap" -L 2>&1)
grep -q 'topic "lattice.shards" with 8 partitions' <<<"$meta" && ok "lattice.shards:8 override" \
  || fail "lattice.shards partitions: $meta"
for t in lattice.dead lattice.changes lattice.jobs; do
  grep -q "topic \"$t\" with 1 partitions" <<<"$meta" && ok "default topic $t" || fail "no $t"
done
grep -q 'topic "extra" with 3 partitions' <<<"$meta" && ok "extra topic" || fail "no extra:3"

control_port=$(cut -d: -f2 control.txt)
exec 3<>"/dev/tcp/127.0.0.1/$control_port"
ctl() { echo "$1" >&3; local r; read -r -t 10 r <&3; echo "$r"; }

expect_eq "control: create" "$(ctl 'create made 5')" "ok"
grep -q 'topic "made" with 5 partitions' <<<"$(kcat -b "$bootstrap" -L -t made 2>&1)" \
  && ok "created topic has 5 partitions" || fail "made:5 missing"
expect_eq "control: unknown command" "$(ctl 'frobnicate')" "error: unknown command 'frobnicate' (try 'help')"
expect_eq "control: bad broker id" "$(ctl 'down 7')" "error: usage: down <broker-id 1..2>"
r=$(ctl 'errors Produce 1 NoSuchError'); [[ $r == error:* ]] && ok "control: unknown error name" \
  || fail "unknown error name answered '$r'"
expect_eq "control: bootstrap" "$(ctl 'bootstrap')" "ok $bootstrap"

# Produce 1000 keyed messages across partitions with retryable errors injected, then consume.
expect_eq "control: errors" "$(ctl 'errors Produce 3 NOT_LEADER_FOR_PARTITION')" "ok"
expect_eq "control: leader" "$(ctl 'leader lattice.shards 0 2')" "ok"
expect_eq "control: rtt" "$(ctl 'rtt 1 5')" "ok"
for i in $(seq 1 1000); do echo "b-$((i % 17))|{\"n\":$i}"; done >in.txt
kcat -P -b "$bootstrap" -t lattice.shards -K '|' -X enable.idempotence=true <in.txt 2>produce.err \
  && ok "kcat produced through injected errors" || fail "kcat -P failed: $(cat produce.err)"
kcat -C -b "$bootstrap" -t lattice.shards -e -o beginning -q -f '%k|%s\n' 2>consume.err \
  | sort >out.txt
expect_eq "all 1000 messages consumed" "$(wc -l <out.txt)" "1000"
sort in.txt | cmp -s - out.txt && ok "consumed = produced (keys and values)" \
  || fail "consumed differs from produced"
parts=$(kcat -C -b "$bootstrap" -t lattice.shards -e -o beginning -q -f '%k %p\n' | sort -u | wc -l)
expect_eq "one partition per key (17 keys)" "$parts" "17"

# Broker down/up over stdin: a consumer started while broker 2 is down still gets everything once
# it is back.
echo "down 2" >&4
sleep 0.5
echo "up 2" >&4
got=$(kcat -C -b "$bootstrap" -t lattice.shards -e -o beginning -q 2>/dev/null | wc -l)
expect_eq "all messages still there after down/up" "$got" "1000"
grep -qx "ok" <(sed -n '3,$p' broker.out) && ok "stdin commands answered ok" \
  || fail "no stdin answers: $(cat broker.out)"

# SIGTERM stops it cleanly and removes the bootstrap file.
exec 3>&-
kill -TERM "$broker_pid"
wait "$broker_pid"; rc=$?
broker_pid=""
expect_eq "exit code after SIGTERM" "$rc" "0"
[ ! -e bs.txt ] && ok "bootstrap file removed" || fail "bootstrap file left behind"

[ $failures -eq 0 ] && echo "all broker checks passed" || echo "$failures check(s) failed"
exit $((failures > 0))
