"""A live WebSocket client that stops reading is dropped to a snapshot by the time bound, and one
that reads keeps up (docs/observer-protocol.md "Slow clients and limits"), with the observer's
default limits (--client-max-lag 1s, --client-queue-bytes 1 MiB).

A writer (`lattice replay -`, fed ~4,000 shards/s over 2,000 paths: ~0.45 MB/s of live changes per
client) runs while two live clients on raw sockets are connected: one reads everything, the other
stops reading (a 4 KiB receive buffer, so TCP pushes back at once) until 1.5 s after it was
dropped (4 .. 15 s). Checks:
- the stalled client is dropped (slow_client_drops_total, reason lag) while the writer runs,
  before the 8 MiB that the old byte-only bound needed;
- the observer's outgoing queues stay bounded meanwhile (client_queued_bytes <= the byte bound
  plus the message in flight) and so does its RSS;
- when it reads again, the stalled client finds a `snapshot` (reason overflow) after no more than
  what the kernel buffers held, and the changes after it are fresh (observed within the last
  second), not the backlog of the stall;
- the reading client is never dropped and sees every commit's changes with a small lag.

    python3 observer_slow_client_test.py LATTICE_BINARY TESTS_DATA_DIR
"""
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from observer_support import Checks, Observer, RawWs, metrics, run, tmpdir  # noqa: E402

RATE = 4000  # shards/s
KEYS = 2000
MIN_STALL_S, MAX_STALL_S = 4.0, 15.0  # the stall lasts until 1.5 s after the first drop


def live_client(obs, rcvbuf=None):
    ws = RawWs(obs.ws, rcvbuf=rcvbuf)
    hello = ws.recv_json()
    snap = ws.recv_json()
    assert hello["type"] == "hello" and snap["type"] == "snapshot", (hello, snap)
    ws.send_json({"type": "set_mode", "payload": {"mode": "live"}})
    while ws.recv_json()["type"] != "mode":
        pass
    return ws


def main():
    lattice, data = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    golden = os.path.join(data, "observer", "golden")
    work = tmpdir("observer-slow-client")
    c = Checks()
    obs = None
    writer = None
    try:
        state = os.path.join(work, "state")
        run([lattice, "replay", os.path.join(golden, "summary_state.ndjson"), "--state", state])
        obs = Observer(lattice, state, work)
        rss0 = obs.rss_kb()
        reader = live_client(obs)
        stalled = live_client(obs, rcvbuf=4096)

        # The reading client: every changes message with its arrival time, until told to stop.
        seen = {"messages": 0, "snapshots": [], "lags": [], "stop": False}

        def read_all():
            reader.sock.settimeout(0.5)
            while not seen["stop"]:
                try:
                    m = reader.recv_json()
                except socket.timeout:
                    continue
                seen["messages"] += 1
                if m["type"] == "snapshot":
                    seen["snapshots"].append(m["payload"]["reason"])
                elif m["type"] == "changes":
                    seen["lags"].append(time.time() * 1000 - m["payload"]["observed_at"])

        reading = threading.Thread(target=read_all)
        reading.start()

        # The writer: paced lines into `lattice replay -` (commits of 500 shards).
        writer = subprocess.Popen([lattice, "replay", "-", "--state", state, "--batch", "500"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        stop_feed = threading.Event()

        def feed():
            start = time.monotonic()
            sent = 0
            while not stop_feed.is_set() and time.monotonic() - start < MAX_STALL_S + 20:
                due = int((time.monotonic() - start) * RATE)
                ts = int(time.time() * 1000)
                lines = [f'{{"blade":"w{i % 8}","seq":{i // 8 + 1},"ts":{ts},'
                         f'"shard":{{"slow":{{"k{i % KEYS}":{i}}}}}}}\n' for i in range(sent, due)]
                if lines:
                    writer.stdin.write("".join(lines).encode())
                    writer.stdin.flush()
                sent = due
                time.sleep(0.01)
            writer.stdin.close()

        feeding = threading.Thread(target=feed)
        feeding.start()

        # Stall: read nothing while the writer runs (until 1.5 s after the first drop, at least
        # MIN_STALL_S, at most MAX_STALL_S: 8 MiB, the old bound, would take ~18 s); watch the
        # observer meanwhile.
        t0 = time.monotonic()
        peak_queued, peak_rss, dropped_after = 0, 0, None
        while time.monotonic() - t0 < MAX_STALL_S and (
                time.monotonic() - t0 < MIN_STALL_S or dropped_after is None or
                time.monotonic() - t0 < dropped_after + 1.5):
            m = metrics(obs)
            peak_queued = max(peak_queued, m.get("lattice_observer_client_queued_bytes", 0))
            peak_rss = max(peak_rss, obs.rss_kb())
            if dropped_after is None and m.get("lattice_observer_slow_client_drops_total", 0) >= 1:
                dropped_after = time.monotonic() - t0
            time.sleep(0.1)
        m = metrics(obs)
        drops = m.get("lattice_observer_slow_client_drops_total", 0)
        by_lag = m.get('lattice_observer_slow_client_drop_reasons_total{reason="lag"}', 0)
        by_bytes = m.get('lattice_observer_slow_client_drop_reasons_total{reason="bytes"}', 0)
        c.check(drops >= 1 and by_lag + by_bytes == drops,
                f"the stalled client was dropped to a snapshot during its "
                f"{time.monotonic() - t0:.1f} s stall "
                f"({drops:.0f} drop(s): lag {by_lag:.0f}, bytes {by_bytes:.0f}; first seen after "
                f"{dropped_after if dropped_after is None else round(dropped_after, 1)} s)")
        c.check(by_lag >= 1, "the time bound (--client-max-lag 1s) dropped it")
        c.check(0 < peak_queued <= (1 << 20) + (1 << 20),
                f"outgoing queues bounded: peak {peak_queued / 1024:.0f} KiB "
                "(<= 1 MiB bound + the message in flight)")
        c.check(peak_rss - rss0 < 100 * 1024, f"RSS bounded: {rss0} kB at start, peak {peak_rss} kB")

        # Resume: what the kernel buffers held, then the snapshot, then fresh changes.
        resumed_ms = time.time() * 1000
        stalled.sock.settimeout(10)
        before_snapshot = 0
        reason = None
        try:
            while True:
                msg = stalled.recv_json()
                if msg["type"] == "snapshot":
                    reason = msg["payload"]["reason"]
                    break
                before_snapshot += 1
        except socket.timeout:
            pass  # no snapshot: checked below
        read_before = stalled.received
        c.check(reason == "overflow", f"the stalled client reads a snapshot (reason {reason}) after "
                f"{before_snapshot} older message(s), {read_before / 1024:.0f} KiB read")
        c.check(read_before < 2 << 20,
                f"the backlog before the snapshot is what the kernel buffers held ({read_before / 1024:.0f} KiB "
                "< 2 MiB), not the stall's backlog")
        first_fresh = None
        lags_after = []
        deadline = time.monotonic() + 3.0
        while reason is not None and time.monotonic() < deadline:
            try:
                msg = stalled.recv_json()
            except socket.timeout:
                break
            if msg["type"] == "changes":
                if first_fresh is None:
                    first_fresh = msg["payload"]["observed_at"]
                lags_after.append(time.time() * 1000 - msg["payload"]["observed_at"])
        c.check(first_fresh is not None and first_fresh >= resumed_ms - 1000,
                "the changes after the snapshot are fresh: the first was observed "
                f"{None if first_fresh is None else round(resumed_ms - first_fresh)} ms before the "
                "client resumed (the stall's backlog would be seconds)")
        lags_after.sort()
        c.check(bool(lags_after) and lags_after[len(lags_after) // 2] < 1000,
                f"the resumed client keeps up: {len(lags_after)} changes messages, median lag "
                f"{lags_after[len(lags_after) // 2] if lags_after else -1:.0f} ms")

        stop_feed.set()
        feeding.join()
        writer.wait(timeout=60)
        c.check(writer.returncode == 0, "the writer replayed its shards")
        time.sleep(1.0)
        seen["stop"] = True
        reading.join()
        lags = sorted(seen["lags"])
        c.check(not seen["snapshots"],
                f"the reading client was never dropped (snapshots: {seen['snapshots']})")
        c.check(len(lags) > 5 and lags[len(lags) // 2] < 500,
                f"the reading client kept up: {len(lags)} changes messages, median lag "
                f"{lags[len(lags) // 2] if lags else -1:.0f} ms, max {lags[-1] if lags else -1:.0f} ms")
        stalled.close()
        reader.close()
        c.check(obs.proc.poll() is None, "the observer still runs")
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
            writer.wait()
        if obs is not None:
            obs.stop()
        shutil.rmtree(work, ignore_errors=True)
    c.done()


if __name__ == "__main__":
    main()
