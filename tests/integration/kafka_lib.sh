# shellcheck shell=bash
# Helpers shared by the Kafka integration tests (sourced, not run). Each test starts its own
# `lattice broker` on 127.0.0.1 with a control channel and stops it on exit.
#
#   start_broker [lattice broker flags...]   sets $bootstrap and $control_port
#   ctl "down 1"                             sends one control command, prints the answer
#   wait_for CMD... / timeout T              polls a command until it succeeds (deadline $wait_s)
#   kafka_test_init NAME TOOL...               scratch dir, exit trap, ok / fail / die (below)
# Requires: $lattice (the binary).

# The dev broker's mock group coordinator (librdkafka 2.0.2) lets a new member join only after the
# previous member's session timed out, even when it left cleanly: tests use short sessions.
fast_group=(-X session.timeout.ms=6000 -X heartbeat.interval.ms=500)

# kafka_test_init NAME TOOL...: the preamble every Kafka test shares. Fails unless each TOOL is on
# the PATH; makes the scratch dir $tmp (lattice-NAME.XXXXXX) and enters it; defines ok / fail / die
# and the $failures count; on exit runs the test's own `on_exit` function if it defines one (to
# kill the processes it started), then stops the broker and removes $tmp.
kafka_test_init() {
  local name=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "FAIL - needs $tool"; exit 1; }
  done
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-$name.XXXXXX")
  trap kafka_test_cleanup EXIT
  cd "$tmp" || exit 1
  failures=0
}

kafka_test_cleanup() {
  if declare -F on_exit >/dev/null; then on_exit; fi
  stop_broker
  rm -rf "$tmp"
}

ok() { echo "ok   - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }
die() { echo "FAIL - $1"; exit 1; }

broker_pid=""
start_broker() {
  "$lattice" broker --no-stdin --control-port 0 --bootstrap-file bs.txt --control-file control.txt \
    "$@" >broker.out 2>broker.err &
  broker_pid=$!
  for _ in $(seq 1 100); do [ -s bs.txt ] && [ -s control.txt ] && break; sleep 0.1; done
  if ! [ -s bs.txt ] || ! [ -s control.txt ]; then
    echo "FAIL - lattice broker did not start: $(cat broker.err)"
    exit 1
  fi
  bootstrap=$(cat bs.txt)
  control_port=$(cut -d: -f2 control.txt)
  exec 7<>"/dev/tcp/127.0.0.1/$control_port"
}

ctl() {
  echo "$1" >&7
  local answer
  IFS= read -r -t 10 answer <&7
  echo "$answer"
}

stop_broker() {
  if [ -n "$broker_pid" ]; then
    exec 7>&- 2>/dev/null
    kill "$broker_pid" 2>/dev/null
    wait "$broker_pid" 2>/dev/null
    broker_pid=""
  fi
}

# wait_for SECONDS CMD...: runs CMD every 0.2 s until it succeeds; returns 1 after SECONDS.
wait_for() {
  local deadline=$(( $(date +%s) + $1 ))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# envelopes_from_topic TOPIC: the topic's messages as envelope lines, by the identity rule of
# DESIGN.md §2.1 written here independently of the product's code: blade = key, seq = the
# lattice-seq header or else the offset, ts = the message timestamp; an unkeyed message's blade is
# unkeyed/<partition>.
envelopes_from_topic() {
  kcat -C -b "$bootstrap" -t "$1" -e -q -f '%k\t%p\t%o\t%T\t%h\t%s\n' 2>/dev/null | python3 -c '
import json, sys
for raw in sys.stdin:
    raw = raw.rstrip("\n")
    if not raw:
        continue
    key, partition, offset, ts, headers, body = raw.split("\t", 5)
    if key == "":
        key = "unkeyed/" + partition
    seq = int(offset)
    for h in headers.split(","):
        if h.startswith("lattice-seq="):
            seq = int(h[len("lattice-seq="):])
    print(json.dumps({"blade": key, "seq": seq, "ts": int(ts), "shard": json.loads(body)},
                     separators=(",", ":")))
'
}
