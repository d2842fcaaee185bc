#!/usr/bin/env bash
# `lattice demo` end to end: it runs the broker, the aggregator and the observer as children,
# serves the page and the summary while running, stops for --for and on SIGTERM with every child
# gone, prints the summary of the merged state, leaves a readable state behind with --dir, and
# fails cleanly (exit 1, nothing left running) when its port is taken.
#
#   bash demo_test.sh LATTICE_BINARY [TESTS_DATA_DIR]
set -uo pipefail

lattice=${1:?usage: demo_test.sh LATTICE_BINARY}
lattice=$(realpath "$lattice")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-demo-test.XXXXXX")
demo_pid=""
cleanup() {
  if [ -n "$demo_pid" ]; then kill -9 "$demo_pid" 2>/dev/null; wait "$demo_pid" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
ok() { echo "ok   - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }
children_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' | grep -c . ; }

# 1. --for with --dir: the URL serves the page and a summary while it runs; then the summary.
"$lattice" demo --for 25s --listen 127.0.0.1:0 --dir "$tmp/run" --seed 5 >"$tmp/out" 2>"$tmp/err" &
demo_pid=$!
url=""
for _ in $(seq 1 300); do
  url=$(grep -o 'http://127.0.0.1:[0-9]*/' "$tmp/out" | head -n 1)
  [ -n "$url" ] && break
  sleep 0.1
done
if [ -z "$url" ]; then
  fail "the demo printed no URL: $(cat "$tmp/err")"
else
  ok "the demo printed its URL ($url)"
  n=$(children_of "$demo_pid")
  [ "$n" = 3 ] && ok "three children (broker, aggregator, observer)" || fail "expected 3 children, found $n"
  curl -fsS "$url" | grep -q 'data-testid="node-list"' && ok "the observer serves the page" \
    || fail "GET / did not return the page"
  sleep 8
  nodes=$(curl -fsS "${url}v1/summary" | jq '.nodes.count')
  [ "$nodes" = 6 ] && ok "the observer's summary counts 6 nodes" || fail "summary nodes.count = $nodes"
  counters=$(curl -fsS "${url}v1/summary" | jq '[.counters[] | select(.path | startswith("scrape."))] | length')
  [ "${counters:-0}" -gt 0 ] && ok "the scrapers' counters are there ($counters)" || fail "no scrape counters"
fi
wait "$demo_pid"
code=$?
demo_pid=""
[ "$code" = 0 ] && ok "--for ends with exit 0" || fail "--for exit code $code: $(tail -5 "$tmp/err")"
grep -q '^nodes: 6 ' "$tmp/out" && ok "the summary names 6 nodes" || fail "summary: $(cat "$tmp/out")"
grep -q '^jobs: ' "$tmp/out" && grep -q '^checks: heartbeats ' "$tmp/out" && ok "the summary has jobs and checks" \
  || fail "summary lacks jobs/checks"
leftover=$(pgrep -f "$tmp/run/" | grep -c . || true)
[ "$leftover" = 0 ] && ok "no child left running" || fail "$leftover children still running"
role=$("$lattice" state get nodes.worker-1.role --state "$tmp/run/state" 2>&1)
[ "$role" = '"worker"' ] && ok "the kept state reads back (nodes.worker-1.role)" || fail "state get: $role"
for log in broker aggregate observe; do
  [ -f "$tmp/run/$log.log" ] && ok "$log.log kept" || fail "no $log.log"
done

# 2. SIGTERM: stops in order, prints the summary, exits 0, leaves nothing behind.
"$lattice" demo --listen 127.0.0.1:0 --dir "$tmp/term" >"$tmp/out2" 2>"$tmp/err2" &
demo_pid=$!
for _ in $(seq 1 300); do grep -q 'running until' "$tmp/out2" && break; sleep 0.1; done
sleep 3
kill -TERM "$demo_pid"
wait "$demo_pid"
code=$?
demo_pid=""
[ "$code" = 0 ] && ok "SIGTERM ends with exit 0" || fail "SIGTERM exit code $code: $(tail -5 "$tmp/err2")"
grep -q '^== the merged state' "$tmp/out2" && ok "SIGTERM prints the summary" || fail "no summary after SIGTERM"
leftover=$(pgrep -f "$tmp/term/" | grep -c . || true)
[ "$leftover" = 0 ] && ok "no child left after SIGTERM" || fail "$leftover children left after SIGTERM"

# 3. A port in use is a clear error before anything starts.
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True); time.sleep(30)' >"$tmp/port" &
holder=$!
for _ in $(seq 1 50); do [ -s "$tmp/port" ] && break; sleep 0.1; done
port=$(cat "$tmp/port")
"$lattice" demo --listen "127.0.0.1:$port" --for 5s >"$tmp/out3" 2>"$tmp/err3"
code=$?
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
[ "$code" = 1 ] && grep -q "lattice: error: --listen: 127.0.0.1:$port is already in use" "$tmp/err3" \
  && ok "a taken port is refused: $(head -n 1 "$tmp/err3")" || fail "port in use: exit $code, $(cat "$tmp/err3")"
"$lattice" demo --for banana >/dev/null 2>"$tmp/err4"
code=$?
[ "$code" = 1 ] && grep -q 'lattice: error: --for' "$tmp/err4" && ok "a bad --for is refused" \
  || fail "--for banana: exit $code, $(cat "$tmp/err4")"

[ "$failures" = 0 ] && echo "all demo checks passed" || echo "$failures demo check(s) failed"
exit $((failures > 0))
